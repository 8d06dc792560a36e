"""Render the scenario reference (every section and field, with type, default and meaning) as Markdown.

``python -m delsim.scenario.reference > docs/scenarios.md`` regenerates the document.
"""

from __future__ import annotations

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from delsim.scenario.loader import inner_model
from delsim.scenario.schema import SweptScenario


def _type_name(annotation) -> str:
    text = getattr(annotation, "__name__", None) or str(annotation)
    text = text.replace("typing.", "").replace("delsim.scenario.schema.", "")
    # A union's bar would end the Markdown table cell.
    return text.replace("|", "\\|")


def _default(field) -> str:
    if field.default is PydanticUndefined and field.default_factory is None:
        return "required"
    if field.default_factory is not None:
        return "(section defaults)"
    return f"`{field.default!r}`"


def render_reference() -> str:
    """Return the Markdown reference of every scenario section."""
    lines = [
        "# Scenario reference",
        "",
        "Generated from `delsim/scenario/schema.py` by `python -m delsim.scenario.reference`.",
        "Unknown keys are errors. Units are in the field names: `_s` seconds, `_bps` bits per second,",
        "`_j` joules, `_hz` per second.",
        "",
    ]
    pending: list[tuple[str, type[BaseModel]]] = [("(top level)", SweptScenario)]
    seen: set[type] = set()
    while pending:
        path, model = pending.pop(0)
        if model in seen:
            continue
        seen.add(model)
        lines += [f"## {path}", "", (model.__doc__ or "").strip().splitlines()[0], "", "| field | type | default | meaning |", "|---|---|---|---|"]
        for name, field in model.model_fields.items():
            description = (field.description or "").replace("|", "\\|")
            lines.append(f"| `{name}` | {_type_name(field.annotation)} | {_default(field)} | {description} |")
            inner = inner_model(field.annotation)
            if inner is not None:
                prefix = "" if path == "(top level)" else f"{path}."
                pending.append((f"{prefix}{name}", inner))
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(render_reference())
