"""Plugin discovery: methods and datamodules are found through entry points.

A third-party package registers its own exactly as dcl's built-ins do, in its ``pyproject.toml``::

    [project.entry-points."dcl.methods"]
    MyMethod = "my_package.module:MyMethod"

Names are matched ignoring case, spaces, '_' and '-'. A plugin that fails to import is reported by name (see
:func:`load_errors`) without breaking the others.
"""

from __future__ import annotations

import difflib
import inspect
import re
from functools import lru_cache
from importlib.metadata import EntryPoint, entry_points

GROUPS = {"method": "dcl.methods", "datamodule": "dcl.datamodules"}


class RegistryError(LookupError):
    """An unknown or broken plugin name."""


def _entry_points(group: str) -> dict[str, EntryPoint]:
    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group=group):
        found.setdefault(ep.name, ep)  # the first distribution on sys.path wins, as for imports
    return dict(sorted(found.items(), key=lambda kv: kv[0].lower()))


@lru_cache(maxsize=None)
def _load(group: str) -> tuple[dict[str, type], dict[str, str]]:
    classes: dict[str, type] = {}
    errors: dict[str, str] = {}
    for name, ep in _entry_points(group).items():
        try:
            classes[name] = ep.load()
        except Exception as err:  # a broken plugin must not take the others down
            errors[name] = f"{ep.value}: {type(err).__name__}: {err}"
    return classes, errors


def refresh() -> None:
    """Forget what was loaded (after installing a plugin in the same process)."""
    _load.cache_clear()


def available(kind: str) -> dict[str, type]:
    """All loadable plugins of ``kind`` (``method`` or ``datamodule``), by registered name."""
    return dict(_load(GROUPS[kind])[0])


def load_errors(kind: str) -> dict[str, str]:
    """Plugins of ``kind`` that failed to import, with the reason."""
    return dict(_load(GROUPS[kind])[1])


def _key(name: str) -> str:
    """What names are matched by: case, spaces, '_' and '-' aside (``ae_kmeans``, ``AE-KMeans``: ``AEKMeans``)."""
    return re.sub(r"[\s_-]", "", name).lower()


def get(kind: str, name: str) -> type:
    """The class registered under ``name`` (matched by :func:`_key`); a clear error listing known names otherwise."""
    classes, errors = _load(GROUPS[kind])
    wanted, by_key = _key(name), {_key(k): k for k in reversed(list(classes))}  # the first of a same-key pair wins
    if wanted in by_key:
        return classes[by_key[wanted]]
    for key, why in errors.items():
        if _key(key) == wanted:
            raise RegistryError(f"{kind} {key!r} is registered but failed to import: {why}")
    close = difflib.get_close_matches(wanted, by_key, n=1, cutoff=0.7)
    hint = f" (did you mean {by_key[close[0]]!r}?)" if close else ""
    known = ", ".join(classes) or "none installed"
    raise RegistryError(f"unknown {kind} {name!r}{hint}; known {kind}s: {known}")


def settings(cls: type) -> list[str]:
    """The constructor arguments of ``cls``, those its ``**kwargs`` pass on included: while an ``__init__`` takes
    ``**kwargs``, the next one up the MRO is read too (as jsonargparse does), so a subclass's
    ``__init__(self, *args, mix=0.5, **kwargs)`` has its parent's settings besides ``mix``."""
    names: list[str] = []
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        try:
            params = list(inspect.signature(klass.__init__).parameters.values())[1:]
        except (TypeError, ValueError):  # a builtin's without a signature
            break
        names += [p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.name not in names]
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    return names


def unknown_setting(cls: type, option: str, hidden: tuple[str, ...] = ()) -> str:
    """One sentence for a setting ``cls`` does not take: the closest one it does, and all of them (but
    ``hidden``: settings the caller fills in itself)."""
    params = [p for p in settings(cls) if p not in hidden]
    close = difflib.get_close_matches(option, params, n=1)
    return (f"{cls.__name__} has no setting {option!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
            + f"; its settings: {', '.join(params)}")


def get_method(name: str) -> type:
    return get("method", name)


def get_datamodule(name: str) -> type:
    return get("datamodule", name)


def describe(cls: type) -> str:
    """First sentence of a class docstring: the one-line description ``dcl list`` prints."""
    paragraph = (cls.__doc__ or "").strip().split("\n\n")[0]
    text = " ".join(line.strip() for line in paragraph.splitlines())
    end = re.search(r"(?<!\bal)(?<!e\.g)(?<!i\.e)\.\s", text)  # not at "et al. ", "e.g. ", "i.e. "
    return text if end is None else text[:end.start() + 1]
