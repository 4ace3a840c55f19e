"""`tally remote add|list|remove|default|modify`: the remotes of `.tally/config`.

Names and URLs go to `.tally/config` (committed: the team shares them); credentials
only to `.tally/config.local` (ignored by Git), with `--local` (spec/remote.md,
"Settings").
"""

from __future__ import annotations

from ..flags import JSON
from ..output import emit_json, out
from ..spec import FLAG, OPTIONAL, REQUIRED, Arg, Command, Group, Opt

LOCAL = Opt(("--local",), "local", FLAG,
            "Write to .tally/config.local (yours only, never committed): credentials go here.")


def _add(a) -> None:
    from cas.remote import settings
    from cas.workspace.project import open_project

    spec = settings.add(open_project(), a.name, a.url, default=a.default)
    out(f"added remote {spec.name}: {spec.url}" + (" (default)" if spec.is_default else ""))


def _list(a) -> None:
    from cas.remote import settings
    from cas.workspace.project import open_project

    specs = settings.remotes(open_project())
    if a.json:
        emit_json([s.public() for s in specs.values()])
        return
    for s in specs.values():
        out(f"{s.name}\t{s.url}" + ("\t(default)" if s.is_default else ""))


def _remove(a) -> None:
    from cas.remote import settings
    from cas.workspace.project import open_project

    settings.remove(open_project(), a.name)
    out(f"removed remote {a.name} (its data stays where it is)")


def _default(a) -> None:
    from cas.remote import settings
    from cas.workspace.project import open_project

    settings.set_default(open_project(), a.name)
    out(f"default remote: {a.name}")


def _modify(a) -> None:
    from cas.core.errors import UsageError
    from cas.remote import settings
    from cas.workspace.project import open_project

    if (a.value is None) != a.unset:
        raise UsageError("give VALUE, or --unset to remove KEY")
    settings.modify(open_project(), a.name, a.key, None if a.unset else a.value, local=a.local)
    where = "config.local" if a.local else "config"
    out(f"remote {a.name}: {a.key} {'unset' if a.unset else 'set'} in .tally/{where}")


NAME_ARG = Arg("name", "NAME", REQUIRED, "The remote's name (letters, digits, '_', '.', '-').")

GROUP = Group("remote", "Remote stores to push to and pull from (directory, s3://, any fsspec URL).", (
    Command("remote add", "Add a remote NAME at URL to .tally/config.\n\nURL: a directory "
            "(/mnt/team/store, file://...), s3://BUCKET/PREFIX (with `remote modify NAME "
            "endpoint_url URL` for S3-compatible servers), gs://, az://, or any fsspec URL.",
            _add, args=(NAME_ARG, Arg("url", "URL", REQUIRED, "Where the remote is.")),
            opts=(Opt(("--default",), "default", FLAG, "Make it the default remote."),),
            exits=((4, "a remote of that name exists"),)),
    Command("remote list", "List the remotes (secrets are never shown).", _list, opts=(JSON,)),
    Command("remote remove", "Remove a remote from the config (its data is not touched).",
            _remove, args=(NAME_ARG,), exits=((3, "no such remote"),)),
    Command("remote default", "Make NAME the remote push, pull and fetch use without -r.",
            _default, args=(NAME_ARG,), exits=((3, "no such remote"),)),
    Command("remote modify", "Set a remote's KEY to VALUE (or --unset it): url, endpoint_url, "
            "region, profile, allow_http; credentials (access_key_id, secret_access_key, "
            "...) only with --local.", _modify,
            args=(NAME_ARG, Arg("key", "KEY", REQUIRED, "The setting."),
                  Arg("value", "VALUE", OPTIONAL, "Its new value.")),
            opts=(LOCAL, Opt(("--unset",), "unset", FLAG, "Remove KEY.")),
            exits=((2, "a credential for the committed config, or a bad key"),
                   (3, "no such remote, or KEY is not set"))),
))
