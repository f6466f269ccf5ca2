"""docs/infrastructure.md stays true: its config table lists every key with the code's default."""

from __future__ import annotations

from components.outputs import OUTPUT_KEYS
from components.settings import CONFIG_KEYS, PROJECT_ROOT

DOC = PROJECT_ROOT / "docs" / "infrastructure.md"


def _config_rows() -> dict[str, list[str]]:
    rows = {}
    for line in DOC.read_text(encoding="utf-8").splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("| `") and len(cells) == 4 and ":" in cells[0]:
            rows[cells[0].strip("`")] = cells[1:]
    return rows


def test_every_config_key_is_documented_with_its_default() -> None:
    rows = _config_rows()
    assert sorted(rows) == sorted(spec.key for spec in CONFIG_KEYS)
    for spec in CONFIG_KEYS:
        kind, default, meaning = rows[spec.key]
        assert kind == spec.kind, spec.key
        assert meaning == spec.description, spec.key
        if spec.required:
            assert default == "required", spec.key
        else:
            expected = str(spec.default).lower() if isinstance(spec.default, bool) else str(spec.default)
            assert default.strip("`").strip('"') == expected, spec.key


def test_every_output_key_is_documented() -> None:
    text = DOC.read_text(encoding="utf-8")
    for key in OUTPUT_KEYS:
        assert f"`{key}`" in text, key
