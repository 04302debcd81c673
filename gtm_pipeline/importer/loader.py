"""Reading a mapping file: YAML with duplicate keys refused and YAML 1.2 booleans (only true/false), validated by the
one contract loader against ``sources.yaml`` (passed as the validation context). The models are in
`gtm_pipeline.importer.spec`."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from gtm_pipeline.config import PROJECT_ROOT, load_settings
from gtm_pipeline.contract_loader import validate
from gtm_pipeline.errors import ContractError
from gtm_pipeline.importer.spec import Mapping
from gtm_pipeline.ingest.landing import load_landing_spec


def _display(path: Path | str) -> str:
    """A path as a user wants to read it: relative to the project or the working directory when possible."""
    p = Path(path)
    for base in (PROJECT_ROOT, Path.cwd()):
        try:
            return p.resolve().relative_to(base.resolve()).as_posix()
        except ValueError:
            continue
    return str(path)


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (PyYAML would silently keep the last one)."""


def _construct_mapping_no_duplicates(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue  # keys merged in with "<<" may be overridden; only literal repeats are mistakes
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, (str, int, float, bool)):
            continue
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}; each key may appear once", key_node.start_mark
            )
        seen.add(key)
    loader.flatten_mapping(node)
    return {
        loader.construct_object(k, deep=True): loader.construct_object(v, deep=True) for k, v in node.value
    }


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping_no_duplicates)

# YAML 1.1 reads on/off/yes/no as booleans, which would turn the lookup key "on" and raw values such as "Yes" in a
# value map into True. Mappings use YAML 1.2's rule instead: only true/false (any case) are booleans.
_StrictLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def load_mapping(path: Path | str, *, contracts_dir: Path | str | None = None) -> Mapping:
    """Load and strictly validate a mapping file against ``sources.yaml``.

    Unknown keys, unknown target source/table/column, unknown inputs and malformed transforms raise
    ``ContractError`` naming the file, the field and what is allowed. Whether the input files exist and have the
    columns the mapping reads is checked by ``run_mapping`` (or ``check_inputs``), which knows the input folder.
    ``contracts_dir`` holds ``sources.yaml``; by default the configured contracts folder.
    """
    path = Path(path)
    shown = _display(path)
    try:
        doc = yaml.load(path.read_text(encoding="utf-8"), Loader=_StrictLoader)  # noqa: S506 - SafeLoader subclass
    except OSError as e:
        raise ContractError(f"{shown}: cannot read the mapping file ({e.strerror})") from e
    except yaml.YAMLError as e:
        raise ContractError(f"{shown}: not valid YAML: {e}") from e
    if not isinstance(doc, dict):
        raise ContractError(f"{shown}: expected a mapping of fields at the top level, got {type(doc).__name__}")
    landing = load_landing_spec(Path(contracts_dir) if contracts_dir is not None else load_settings().contracts_dir)
    return validate(Mapping, doc, shown, context={"landing": landing, "path": path, "display": shown})
