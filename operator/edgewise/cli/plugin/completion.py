"""Shell completion for `kubectl edgewise` and `kubectl-edgewise`.

One engine, `candidates`, answers kubectl's plugin completion convention (kubectl runs
`kubectl_complete-edgewise` with the words after `edgewise`, the last being the word under the
cursor, and reads one choice a line, then `:<cobra directive>`); the bash and zsh scripts of
`kubectl edgewise completion bash|zsh` call the same executable for `kubectl-edgewise` typed alone.
What to complete is read from the argparse parser itself, so a new flag or verb completes without
a change here; EdgeModel and namespace names come from the cluster (`lookup`).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from dataclasses import dataclass

# cobra's ShellCompDirective bits (kubectl forwards them to the shell).
DIRECTIVE_DEFAULT = 0  # fall back to file names
DIRECTIVE_NO_FILES = 4
SHELLS = ("bash", "zsh")
# kind ("edgemodels" or "namespaces"), the global flags typed so far (dest → value) → names; never raises.
Lookup = Callable[[str, Mapping[str, str]], list[str]]


@dataclass(frozen=True)
class Completion:
    choices: list[str]
    directive: int = DIRECTIVE_NO_FILES

    def render(self) -> str:
        return "".join(f"{c}\n" for c in self.choices) + f":{self.directive}\n"


def candidates(parser: argparse.ArgumentParser, words: list[str], lookup: Lookup) -> Completion:
    """Choices for the last of `words` (the words after the plugin's name; the last may be empty)."""
    *before, current = words or [""]
    verbs = _verbs(parser)
    command: argparse.ArgumentParser = parser
    verb, positionals = None, 0
    flags: dict[str, str] = {}  # e.g. namespace, kubeconfig: where the names come from
    pending: argparse.Action | None = None  # a flag whose value the next word is
    for word in before:
        if pending is not None:
            flags[pending.dest], pending = word, None
        elif word.startswith("-"):
            flag, eq, value = word.partition("=")
            action = _option(command, flag)
            if action is not None and action.nargs != 0:
                if eq:
                    flags[action.dest] = value
                else:
                    pending = action
        elif verb is None and word in verbs:
            verb, command = word, verbs[word]
        else:
            positionals += 1
    if pending is not None:
        if pending.dest == "namespace":
            return _matching(lookup("namespaces", flags), current)
        if pending.dest == "kubeconfig":
            return Completion([], DIRECTIVE_DEFAULT)
        return _matching(list(pending.choices or []), current)
    if current.startswith("-"):
        return _matching(sorted({o for a in command._actions for o in a.option_strings}), current)
    if verb is None:
        return _matching(list(verbs), current)
    wanted = [a for a in command._actions if not a.option_strings]
    if positionals >= len(wanted):
        return Completion([])
    arg = wanted[positionals]
    if arg.choices:
        return _matching(list(arg.choices), current)
    if arg.dest == "model":
        return _matching(lookup("edgemodels", flags), current)
    return Completion([])


def _verbs(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _option(parser: argparse.ArgumentParser, flag: str) -> argparse.Action | None:
    return next((a for a in parser._actions if flag in a.option_strings), None)


def _matching(choices: list[str], prefix: str) -> Completion:
    return Completion([c for c in choices if c.startswith(prefix)])


def script(shell: str) -> str:
    if shell not in SHELLS:
        raise ValueError(f"no completion for {shell!r}; one of {', '.join(SHELLS)}")
    return _BASH if shell == "bash" else _ZSH


# Both scripts hand the words to kubectl_complete-edgewise, installed beside kubectl-edgewise.
_BASH = r'''# bash completion for kubectl-edgewise: source <(kubectl edgewise completion bash)
# (`kubectl edgewise <TAB>` completes through kubectl's own completion and kubectl_complete-edgewise.)
_kubectl_edgewise() {
    local out directive
    out=$(kubectl_complete-edgewise "${COMP_WORDS[@]:1:COMP_CWORD}" 2>/dev/null) || return 0
    directive=${out##*:}
    out=${out%:*}
    COMPREPLY=()
    local line
    while IFS= read -r line; do
        [[ -n $line ]] && COMPREPLY+=("$line")
    done <<< "$out"
    if (( ${#COMPREPLY[@]} == 0 && (directive & 4) == 0 )); then
        compopt -o default 2>/dev/null
    fi
}
complete -F _kubectl_edgewise kubectl-edgewise
'''

_ZSH = r'''#compdef kubectl-edgewise
# zsh completion for kubectl-edgewise: source <(kubectl edgewise completion zsh) after compinit,
# or save it as _kubectl-edgewise in a directory of $fpath.
_kubectl_edgewise() {
    local -a lines choices
    local directive=0
    lines=("${(@f)$(kubectl_complete-edgewise "${(@)words[2,CURRENT]}" 2>/dev/null)}")
    if [[ ${lines[-1]} == :<-> ]]; then
        directive=${lines[-1]#:}
        lines=("${(@)lines[1,-2]}")
    fi
    choices=(${lines:#})
    if (( ${#choices} )); then
        compadd -a choices
    elif (( (directive & 4) == 0 )); then
        _files
    fi
}
if [[ $funcstack[1] == _kubectl_edgewise || $funcstack[1] == _kubectl-edgewise ]]; then
    _kubectl_edgewise "$@"
else
    compdef _kubectl_edgewise kubectl-edgewise
fi
'''
