"""One config loader for every entry point: typed dataclass schema <- YAML <- dotted CLI overrides.

A YAML file may pick config groups with a top-level ``defaults`` mapping, e.g. ``defaults: {model: tiny}``
loads ``configs/model/tiny.yaml`` into the ``model`` key before the file's own keys are merged. A group that
is not a key of the schema is an overlay: ``defaults: {scale: tiny}`` merges ``configs/scale/tiny.yaml`` at
the top level *after* the file, so it can shrink the file's sizes. On the command line ``model=small``
switches a group the file declares, ``mixture=qwenvl-stage2`` adds an overlay group the file does not
declare (``configs/mixture/``), and ``train.max_steps=50`` sets a key. Unknown keys,
wrong types and missing files raise :class:`ConfigError`, which names the key and where it came from.

This module imports nothing heavy (no torch), so data prep and launchers can share it.
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

CONFIG_ROOT = Path(__file__).resolve().parents[1] / "configs"
# The embedded default's vision tower (configs/model/open_clip/tiny-ViT-14.json), named once: the synthetic
# CLIP scorer that data prep trains is this architecture, and the tiny model's tower starts from that scorer.
TINY_TOWER = "tiny-ViT-14"


@functools.cache
def register_open_clip_configs() -> None:
    """Make our own open_clip architectures (``configs/model/open_clip``: the tiny default) known next to
    open_clip's built-in ones; called before an architecture name is resolved, never at import."""
    import open_clip

    open_clip.add_model_config(CONFIG_ROOT / "model" / "open_clip")


T = TypeVar("T")


class ConfigError(ValueError):
    """A config problem; the message names the file and/or key."""


def load_config(
    schema: type[T],
    path: str | Path | None = None,
    overrides: Sequence[str] = (),
    config_root: str | Path = CONFIG_ROOT,
) -> T:
    """Build a ``schema`` instance from defaults, then ``path``, then ``overrides`` ("a.b=value")."""
    root = Path(config_root)
    merged = OmegaConf.structured(schema)
    body: dict[str, Any] = {}
    groups: dict[str, str] = {}
    if path is not None:
        body = _read_yaml(Path(path))
        groups = body.pop("defaults", None) or {}
        if not isinstance(groups, dict):
            raise ConfigError(f"{path}: 'defaults' must map a group to a preset name, e.g. {{model: tiny}}")

    dotted = []
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"command line: override {item!r} is not of the form key=value")
        named = value and not value.startswith(("{", "["))
        if named and (key in groups or (key not in merged and (root / key).is_dir())):
            groups[key] = value  # a group the file declares in `defaults`, or an overlay group added here
        else:
            dotted.append(item)

    overlays = []
    for group, choice in groups.items():
        group_file = _group_file(root, group, str(choice))
        if group in merged:  # a group named like a key fills that key, under the file's own values
            merged = _merge(merged, {group: _read_yaml(group_file)}, source=str(group_file))
        else:  # any other group (`scale`) overlays the whole config, over the file's values
            overlays.append(group_file)
    if body:
        merged = _merge(merged, body, source=str(path))
    for group_file in overlays:
        merged = _merge(merged, _read_yaml(group_file), source=str(group_file))
    for item in dotted:
        key, _, value = item.partition("=")
        try:
            cli = OmegaConf.from_dotlist([item])
        except OmegaConfBaseException as e:
            raise ConfigError(f"command line: cannot parse override {item!r}: {_short(e)}") from None
        # `key={...}` replaces a free-form mapping; `key.entry=value` sets one entry
        merged = _merge(merged, cli, source="command line", replace_at=key if value.startswith("{") else None)

    where = str(path) if path is not None else "config"
    try:
        return OmegaConf.to_object(merged)  # type: ignore[return-value]
    except OmegaConfBaseException as e:
        raise ConfigError(f"{where}: key '{e.full_key}': {_short(e)}") from None
    except ConfigError as e:  # raised by a schema's __post_init__ check
        raise ConfigError(f"{where}: {e}") from None


def to_overrides(schema: type, tree: dict[str, Any], prefix: str = "") -> list[str]:
    """A nested mapping of ``schema``'s keys as the command line's ``key=value`` overrides, in the mapping's
    order (what ``load_config`` reads back to the same values): nested dataclasses become dotted keys; a
    free-form mapping or a list is written whole (``data.tasks={caption: 2, vqa: 1}``). Keys are checked
    against the schema, so a typo is an error here, naming it."""
    fields, kinds = {f.name for f in dataclasses.fields(schema)}, typing.get_type_hints(schema)
    out = []
    for key, value in tree.items():
        if key not in fields:
            raise ConfigError(f"key '{prefix}{key}': not a key of {schema.__name__}; known: {sorted(fields)}")
        kind = kinds[key]
        if isinstance(value, dict) and dataclasses.is_dataclass(kind):
            out += to_overrides(kind, value, f"{prefix}{key}.")
        else:
            out.append(f"{prefix}{key}={_cli_value(value)}")
    return out


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested mapping as dotted keys to its leaves: ``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _cli_value(value: Any) -> str:
    """A value as YAML reads it back (floats keep their dot: ``5.0e-05``, not ``5e-05``)."""
    if isinstance(value, str):
        return value
    text = yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=10**6)
    return text.removesuffix("\n...\n").strip()


def save_config(cfg: Any, path: str | Path) -> Path:
    """Write the resolved config as YAML (atomically: a crash never leaves half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(to_yaml(cfg))
    tmp.replace(path)
    return path


def to_yaml(cfg: Any) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def _group_file(root: Path, group: str, choice: str) -> Path:
    direct = Path(choice)
    if direct.suffix in (".yaml", ".yml"):
        candidate = direct
    else:
        candidate = root / group / f"{choice}.yaml"
    if not candidate.is_file():
        available = sorted(p.stem for p in (root / group).glob("*.yaml"))
        raise ConfigError(
            f"config group '{group}': no preset '{choice}' ({candidate} not found); available: {available}"
        )
    return candidate


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data


def _merge(base: DictConfig, update: Any, source: str, replace_at: str | None = None) -> DictConfig:
    """Merge ``update`` into ``base``. A mapping given in a file for a free-form dict field (such as
    ``data.tasks``) replaces the field instead of merging into it, so defaults never leak into a mix."""
    try:
        if replace_at is not None:
            _clear_free_dict(base, replace_at)
        elif isinstance(update, dict):
            _clear_free_dicts(base, update)
        return OmegaConf.merge(base, update)  # type: ignore[return-value]
    except OmegaConfBaseException as e:
        raise ConfigError(f"{source}: key '{e.full_key}': {_short(e)}") from None


def _clear_free_dicts(base: DictConfig, update: dict, prefix: str = "") -> None:
    for key, value in update.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        node = OmegaConf.select(base, path, throw_on_missing=False)
        if isinstance(value, dict) and isinstance(node, DictConfig):
            if _is_free_dict(node):
                _clear_free_dict(base, path)
            else:
                _clear_free_dicts(base, value, path)


def _clear_free_dict(base: DictConfig, path: str) -> None:
    node = OmegaConf.select(base, path, throw_on_missing=False)
    if isinstance(node, DictConfig) and _is_free_dict(node):
        OmegaConf.update(base, path, {}, merge=False)


def _is_free_dict(node: DictConfig) -> bool:
    return OmegaConf.get_type(node) is dict


def _short(e: OmegaConfBaseException) -> str:
    return str(e.msg).splitlines()[0] if getattr(e, "msg", None) else type(e).__name__
