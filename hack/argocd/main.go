// Command argocd is Argo CD v3's own binary, built from the Go module proxy, for the tests that run
// Edgewise's resource customizations (charts/argocd/resource_customizations) through Argo CD itself.
//
// Like upstream's cmd/main.go it is one binary that acts by the name it runs under (argv[0] or
// ARGOCD_BINARY_NAME), but it links only the parts a test needs: the CLI (`argocd admin settings
// resource-overrides ...`) and, for a GitOps run against the dev cluster, the application
// controller, the repo server and the API server (for `argocd app actions run`; the CLI links its
// code already). No Dex, notifications, ApplicationSets or commit server.
package main

import (
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	appcontroller "github.com/argoproj/argo-cd/v3/cmd/argocd-application-controller/commands"
	reposerver "github.com/argoproj/argo-cd/v3/cmd/argocd-repo-server/commands"
	apiserver "github.com/argoproj/argo-cd/v3/cmd/argocd-server/commands"
	cli "github.com/argoproj/argo-cd/v3/cmd/argocd/commands"
)

func main() {
	name := filepath.Base(os.Args[0])
	if env := os.Getenv("ARGOCD_BINARY_NAME"); env != "" {
		name = env
	}
	var command *cobra.Command
	switch name {
	case "argocd-application-controller":
		command = appcontroller.NewCommand()
	case "argocd-repo-server":
		command = reposerver.NewCommand()
	case "argocd-server":
		command = apiserver.NewCommand()
	default:
		command = cli.NewCommand()
	}
	if err := command.Execute(); err != nil {
		os.Exit(1)
	}
}
