"""portscope completion: print a shell's completion script (the scripts live in :mod:`portscope.shell.scripts`)."""

from __future__ import annotations

import click

from portscope.cli.options import COMMAND_SETTINGS, Command
from portscope.shell.scripts import SHELLS, completion_script


@click.command("completion", cls=Command, context_settings=COMMAND_SETTINGS)
@click.argument("shell", type=click.Choice(SHELLS))
def completion(shell: str) -> None:
    """Print the shell completion script for bash, zsh or fish.

    Completion covers commands, options and their values: ports in use for who, this host's
    addresses for can-bind, socket states, user names, pids, interfaces and namespaces. Values are
    read when <TAB> is pressed, so the script itself never goes stale.

    \b
    Examples:
      source <(portscope completion bash)       bash: this shell only
      echo 'source <(portscope completion bash)' >> ~/.bashrc
          bash: every new shell
      portscope completion zsh > ~/.zfunc/_portscope
          zsh: with fpath+=(~/.zfunc) before compinit in ~/.zshrc
      portscope completion fish > ~/.config/fish/completions/portscope.fish
          fish: every new shell
    """
    click.echo(completion_script(shell), nl=False)
