"""A small store of calibration profiles: JSON files addressed by path or by name.

A :class:`Profile` is what a calibration run measured for one model: its ``kind`` (which cache it is for,
``"magcache"`` or ``"teacache"``), the ``model`` name, the cache-specific ``data`` (for MagCache, the per-branch
magnitude-ratio curves) and free-form ``metadata`` (when, with what, on which module class).

Profiles are addressed in one of two ways:

* a **path**: a :class:`os.PathLike`, or a string that contains a path separator or ends with ``.json``;
* a **name**: any other string, made of letters, digits, ``.``, ``_`` and ``-``; it refers to
  ``<profile dir>/<name>.json``, where the profile directory is ``$DITCACHE_PROFILE_DIR`` if set, otherwise
  ``ditcache/profiles`` under the user cache directory (``$XDG_CACHE_HOME`` or ``~/.cache``; ``%LOCALAPPDATA%``
  on Windows).

When a name is loaded for a given ``kind`` (``load_profile(name, kind="teacache")``, which is what
``TeaCacheConfig(profile=name)`` and ``MagCacheConfig(profile=name)`` do) and ``<name>.json`` does not exist, the
files ``<name>.<kind>.json`` in the profile directory, then in the profiles shipped inside the package
(``ditcache/bundled/profiles``) are tried in turn: ``ditcache calibrate --name NAME`` writes
``NAME.teacache.json`` and ``NAME.magcache.json``, so one name serves both caches. Files in the profile directory
take precedence over the shipped ones.

The file format is plain JSON (one object: ``format``, ``version``, ``kind``, ``model``, ``data``, ``metadata``),
written atomically. Every problem (missing file, unknown name, invalid JSON, wrong kind, a field of the wrong
type) raises :class:`ProfileError` naming the file and the field.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from ditcache.core.validators import Rule, non_empty_str, one_of, optional

__all__ = [
    "PROFILE_DIR_ENV",
    "PROFILE_KINDS",
    "Profile",
    "ProfileError",
    "ProfileNotFoundError",
    "bundled_profile_dir",
    "find_profile",
    "list_profiles",
    "load_profile",
    "profile_dir",
    "profile_path",
    "profile_reference",
    "save_profile",
]

PROFILE_DIR_ENV = "DITCACHE_PROFILE_DIR"
"""Environment variable naming the directory that holds named profiles."""

PROFILE_KINDS = ("magcache", "teacache")
"""The caches a profile can be for."""

_FORMAT = "ditcache-profile"
_VERSION = 1
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class ProfileError(ValueError):
    """A profile is missing, unreadable or invalid; the message names the file and the field."""


class ProfileNotFoundError(ProfileError, FileNotFoundError):
    """No profile file exists at the given path or under the given name."""


_check_kind = attrs.evolve(one_of(PROFILE_KINDS), error=ProfileError)
_check_model = attrs.evolve(optional(non_empty_str), error=ProfileError)
_check_mapping = Rule(
    lambda v: isinstance(v, dict) and all(isinstance(k, str) for k in v),
    "a dict with string keys",
    ProfileError,
    message=lambda where, v: f"{where}: expected a dict with string keys, got {type(v).__name__}",
)


def _as_dict(value: Any) -> Any:
    return dict(value) if isinstance(value, Mapping) else value


@attrs.frozen
class Profile:
    """One calibration result: which cache it is for, for which model, the measured data and metadata."""

    kind: str = attrs.field(validator=_check_kind)
    """The cache the profile is for: one of :data:`PROFILE_KINDS`."""
    model: str | None = attrs.field(validator=_check_model)
    """The model (preset key or free name) the profile was measured on."""
    data: dict[str, Any] = attrs.field(converter=_as_dict, validator=_check_mapping)
    """Cache-specific content (JSON-serialisable)."""
    metadata: dict[str, Any] = attrs.field(factory=dict, converter=_as_dict, validator=_check_mapping)
    """Free-form provenance: creation time, library versions, module class, settings, ..."""

    def to_json_dict(self) -> dict[str, Any]:
        """The JSON object written to disk."""
        return {
            "format": _FORMAT,
            "version": _VERSION,
            "kind": self.kind,
            "model": self.model,
            "data": self.data,
            "metadata": self.metadata,
        }

    @classmethod
    def from_json_dict(cls, obj: Any, *, source: str = "<dict>") -> Profile:
        """Build from the JSON object of a profile file; ``source`` names it in errors."""
        if not isinstance(obj, dict):
            raise ProfileError(f"profile {source}: expected a JSON object, got {type(obj).__name__}")
        if obj.get("format") != _FORMAT:
            raise ProfileError(f"profile {source}: 'format' must be {_FORMAT!r}, got {obj.get('format')!r}")
        if obj.get("version") != _VERSION:
            raise ProfileError(
                f"profile {source}: unsupported 'version' {obj.get('version')!r}; this ditcache reads version "
                f"{_VERSION}"
            )
        allowed = {"format", "version", "kind", "model", "data", "metadata"}
        unknown = sorted(set(obj) - allowed)
        if unknown:
            raise ProfileError(f"profile {source}: unknown key(s) {unknown}; allowed keys: {sorted(allowed)}")
        for key in ("kind", "data"):
            if key not in obj:
                raise ProfileError(f"profile {source}: missing key {key!r}")
        try:
            return cls(kind=obj["kind"], model=obj.get("model"), data=obj["data"], metadata=obj.get("metadata") or {})
        except ProfileError as exc:
            raise ProfileError(f"profile {source}: {exc}") from None


def profile_dir() -> Path:
    """The directory of named profiles: ``$DITCACHE_PROFILE_DIR`` or ``<user cache dir>/ditcache/profiles``."""
    env = os.environ.get(PROFILE_DIR_ENV)
    if env:
        return Path(env).expanduser()
    if os.name == "nt" and os.environ.get("LOCALAPPDATA"):
        base = Path(os.environ["LOCALAPPDATA"])
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "ditcache" / "profiles"


def _is_path(path_or_name: str | os.PathLike[str]) -> bool:
    if not isinstance(path_or_name, str):
        return True
    seps = {"/", os.sep} | ({os.altsep} if os.altsep else set())
    return any(s in path_or_name for s in seps) or path_or_name.endswith(".json")


def profile_path(path_or_name: str | os.PathLike[str]) -> Path:
    """Where a profile lives: the path itself, or ``<profile dir>/<name>.json`` for a name."""
    if not isinstance(path_or_name, (str, os.PathLike)):
        raise TypeError(f"profile: expected a name or a path, got {type(path_or_name).__name__}")
    if _is_path(path_or_name):
        return Path(path_or_name).expanduser()
    name = str(path_or_name)
    if not _NAME_RE.match(name):
        raise ProfileError(
            f"profile: {name!r} is not a valid profile name (letters, digits, '.', '_' and '-', starting with a "
            "letter or digit); pass a path ending in .json for a file elsewhere"
        )
    return profile_dir() / f"{name}.json"


def bundled_profile_dir() -> Path:
    """The directory of the profiles shipped inside the package (``ditcache/bundled/profiles``)."""
    return Path(__file__).resolve().parent / "bundled" / "profiles"


def find_profile(path_or_name: str | os.PathLike[str], kind: str | None = None) -> Path:
    """The file a profile path or name refers to (see the module docstring for the lookup order of a name).

    Raises :class:`ProfileNotFoundError` naming the directory searched and the available names when there is none.
    """
    if kind is not None and kind not in PROFILE_KINDS:
        raise ValueError(f"kind: expected one of {list(PROFILE_KINDS)} or None, got {kind!r}")
    path = profile_path(path_or_name)
    if _is_path(path_or_name):
        if not path.is_file():
            raise ProfileNotFoundError(f"profile: no profile file at {path}")
        return path
    name = str(path_or_name)
    shipped = bundled_profile_dir()
    candidates = [path]
    if kind is not None:
        candidates += [path.with_name(f"{name}.{kind}.json"), shipped / f"{name}.{kind}.json"]
    candidates.append(shipped / f"{name}.json")
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    available = list_profiles()
    raise ProfileNotFoundError(
        f"profile: no profile named {name!r} in {path.parent} (the directory comes from "
        f"${PROFILE_DIR_ENV} or the user cache dir); available: {available or 'none'}"
        + (f"; shipped with ditcache: {sorted(p.stem for p in shipped.glob('*.json'))}" if shipped.is_dir() else "")
    )


def save_profile(profile: Profile, path_or_name: str | os.PathLike[str], *, overwrite: bool = True) -> Path:
    """Write ``profile`` to a path or under a name (see the module docstring); returns the file written.

    The directory is created if needed and the file is replaced atomically. With ``overwrite=False`` an existing
    file is an error.
    """
    if not isinstance(profile, Profile):
        raise TypeError(f"profile: expected a Profile, got {type(profile).__name__}")
    path = profile_path(path_or_name)
    if not overwrite and path.exists():
        raise ProfileError(f"profile: {path} already exists; pass overwrite=True to replace it")
    try:
        text = json.dumps(profile.to_json_dict(), indent=2, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ProfileError(
            f"profile: the data or metadata cannot be written as strict JSON (finite numbers, strings, lists, "
            f"dicts): {exc}"
        ) from None
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_profile(path_or_name: str | os.PathLike[str], *, kind: str | None = None) -> Profile:
    """Read a profile by path or by name (:func:`find_profile` says which file); with ``kind`` given, a profile
    of another kind is an error."""
    if kind is not None and kind not in PROFILE_KINDS:
        raise ValueError(f"kind: expected one of {list(PROFILE_KINDS)} or None, got {kind!r}")
    path = find_profile(path_or_name, kind)
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProfileError(f"profile {path}: cannot be read as JSON: {exc}") from None
    profile = Profile.from_json_dict(obj, source=str(path))
    if kind is not None and profile.kind != kind:
        raise ProfileError(f"profile {path}: is a {profile.kind!r} profile, expected a {kind!r} profile")
    return profile


def list_profiles(kind: str | None = None) -> list[str]:
    """Names of the profiles in the profile directory (of one ``kind`` if given), sorted."""
    directory = profile_dir()
    if not directory.is_dir():
        return []
    names = []
    for path in sorted(directory.glob("*.json")):
        if not _NAME_RE.match(path.stem):
            continue
        if kind is not None:
            try:
                if load_profile(path).kind != kind:
                    continue
            except ProfileError:
                continue
        names.append(path.stem)
    return names


def profile_reference(value: Any, field: str) -> str | None:
    """Normalise a config's profile reference (a name, a path or None) to a string; TypeError naming ``field``."""
    if value is None:
        return None
    if isinstance(value, os.PathLike):
        path = os.fspath(value)
        return path if isinstance(path, str) else os.fsdecode(path)
    if not isinstance(value, str) or not value:
        raise TypeError(f"{field}: expected a profile name, a path or None, got {value!r}")
    return value
