"""tally's side of the remote rows: ``python -m bench.tally_remote ACTION PROJECT [NAME]``.

ACTION is one of ``push``, ``pull``, ``exp-push``, ``exp-pull`` (NAME: the experiment).
Run as a timed child by bench/remotebench.py with this checkout's interpreter, so the
harness never imports ``cas``. It calls exactly the library functions the commands
`tally push`, `tally pull`, `tally push --exp NAME` and `tally pull --exp NAME` call
(cas/sync/data.py, cas/sync/exps.py), with the project's default remote; until the
declared CLI has those commands, this is how they run. Exit status: 0, or the
TallyError's exit code with its message on stderr.
"""

from __future__ import annotations

import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    from cas.core.errors import TallyError
    from cas.sync import data, exps
    from cas.workspace.project import open_project

    action, root = argv[0], Path(argv[1])
    try:
        project = open_project(root)
        if action == "push":
            data.push(project).raise_for_failures()
        elif action == "pull":
            data.pull(project).raise_for_failures()
        elif action in ("exp-push", "exp-pull"):
            fn = exps.push if action == "exp-push" else exps.pull
            rep = fn(project, names=[argv[2]])
            if rep.exit_code:
                print(rep.results, file=sys.stderr)
                return rep.exit_code
        else:
            print(f"unknown action {action}", file=sys.stderr)
            return 2
    except TallyError as exc:
        print(f"tally: {exc.message}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
