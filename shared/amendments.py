"""Analyst amendments applied to a report (pure): the ESP's original is never changed.

A path names one field of the report in dots, with list indexes as numbers:
`location.us_state`, `incident_type`, `reported_users.0.screen_name`.
"""

from typing import Any

from pydantic import ValidationError

from shared.contracts import Amendment, Report


class BadAmendment(ValueError):
    def __init__(self, path: str, reason: str, field: str = "path") -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason
        self.field = field  # which part of the request is wrong: "path" or "value"


def _walk(doc: Any, parts: list[str], path: str) -> tuple[Any, str | int]:
    """The container holding the last part of `path`, and the key or index in it."""
    node = doc
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise BadAmendment(path, f"no item {part!r} in list")
            key: str | int = int(part)
        elif isinstance(node, dict):
            if part not in node and not (last or part == "extra"):
                raise BadAmendment(path, f"no field {part!r}")
            key = part
        else:
            raise BadAmendment(path, f"{parts[i - 1]!r} has no fields")
        if last:
            return node, key
        node = node[key] if not isinstance(node, dict) else node.setdefault(key, {})
    raise BadAmendment(path, "empty path")


def current_value(report: Report, path: str) -> Any:
    doc = report.model_dump(mode="json")
    container, key = _walk(doc, path.split("."), path)
    if isinstance(container, dict):
        return container.get(key)  # type: ignore[call-overload]
    return container[key]


def apply(report: Report, path: str, value: Any) -> Report:
    """The report with `path` set to `value`; BadAmendment with a reason when it cannot be."""
    doc = report.model_dump(mode="json")
    parts = path.split(".")
    container, key = _walk(doc, parts, path)
    if isinstance(container, dict) and parts[0] != "extra" and key not in container:
        raise BadAmendment(path, f"no field {key!r}")
    container[key] = value
    try:
        return Report.model_validate(doc)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise BadAmendment(path, str(first["msg"]), field="value") from None


def amended(report: Report, amendments: list[Amendment]) -> Report:
    for a in amendments:
        report = apply(report, a.path, a.value)
    return report
