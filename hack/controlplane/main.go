// Command controlplane is one multi-call binary holding the real Kubernetes
// control plane (kube-apiserver, kube-controller-manager, kube-scheduler),
// etcd and kubectl, and the node components of the one real node (kubelet,
// kube-proxy), built from the upstream Go modules of one release. Pick the component by
// the first argument or by the name the binary is invoked as (a symlink):
//
//	controlplane kube-apiserver --etcd-servers=...
//	kubectl get nodes   (symlink to controlplane)
package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"go.etcd.io/etcd/server/v3/etcdmain"
	"k8s.io/component-base/cli"
	"k8s.io/kubectl/pkg/cmd"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	proxy "k8s.io/kubernetes/cmd/kube-proxy/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
	kubelet "k8s.io/kubernetes/cmd/kubelet/app"
)

var components = []string{
	"kube-apiserver", "kube-controller-manager", "kube-scheduler", "etcd", "kubectl", "kubelet", "kube-proxy",
}

func main() {
	name := filepath.Base(os.Args[0])
	args := os.Args[1:]
	if !known(name) {
		if len(args) == 0 || !known(args[0]) {
			fmt.Fprintf(os.Stderr, "usage: %s {%v} [flags]\n", name, components)
			os.Exit(2)
		}
		name, args = args[0], args[1:]
	}
	// cobra and etcd read os.Args themselves; present them as the component would see them.
	os.Args = append([]string{name}, args...)
	switch name {
	case "kube-apiserver":
		os.Exit(cli.Run(apiserver.NewAPIServerCommand()))
	case "kube-controller-manager":
		os.Exit(cli.Run(controllermanager.NewControllerManagerCommand()))
	case "kube-scheduler":
		os.Exit(cli.Run(scheduler.NewSchedulerCommand()))
	case "etcd":
		etcdmain.Main(os.Args)
	case "kubectl":
		os.Exit(cli.Run(cmd.NewDefaultKubectlCommand()))
	case "kubelet":
		os.Exit(cli.Run(kubelet.NewKubeletCommand(context.Background())))
	case "kube-proxy":
		os.Exit(cli.Run(proxy.NewProxyCommand()))
	}
}

func known(name string) bool {
	for _, c := range components {
		if c == name {
			return true
		}
	}
	return false
}
