"""Generated malformed scenarios and rig profiles: every one is a ConfigError naming its place, never a traceback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from twinloop.errors import ConfigError
from twinloop.harness.plan import plan
from twinloop.harness.scenario import parse_scenario
from twinloop.rigs.profile import load_rig

ROOT = Path(__file__).parents[1]
EXAMPLES = [yaml.safe_load((ROOT / "scenarios" / name).read_text())
            for name in ("smoke.yaml", "power_module_recovery.yaml")]
for example in EXAMPLES:
    example.pop("include", None)
    example.setdefault("dut", {"id": "pm", "version": "1"})
    example.setdefault("devices", {"module": {"type": "power_module",
                                              "twin": {"model": "power_module_thermal"}}})
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow],
                derandomize=True)

scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
                    st.sampled_from(["5 s", "-1 s", "0 s", "1e300 s", "30 W", "125 degC", "3 bar",
                                     "module.power", "module.nope", "nope.power", "${x}", "wedge",
                                     "on", "off", "inf W", "1 W/s", "0 W/s"]))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                      max_leaves=6)


def paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += paths(v, (*prefix, i))
    return out


def mutate(doc: Any, path: tuple[Any, ...], action: str, value: Any) -> Any:
    if not path:
        return value if action == "replace" else doc
    parent = doc
    for part in path[:-1]:
        parent = parent[part]
    key = path[-1]
    if action == "delete":
        del parent[key]
    elif action == "replace":
        parent[key] = value
    elif isinstance(parent, dict):
        parent[f"{key}_extra"] = value
    return doc


def check(text: str) -> None:
    try:
        plan(parse_scenario("fuzz.yaml", text))
    except ConfigError as err:
        assert err.file == "fuzz.yaml" and str(err).startswith("fuzz.yaml")


@FUZZ
@given(st.data())
def test_mutated_scenarios_fail_only_with_config_errors(data: st.DataObject) -> None:
    import copy
    doc = copy.deepcopy(data.draw(st.sampled_from(EXAMPLES)))
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(paths(doc)))
        doc = mutate(doc, path, data.draw(st.sampled_from(["replace", "delete", "add"])), data.draw(values))
    check(yaml.safe_dump(doc, sort_keys=False) if isinstance(doc, (dict, list)) else str(doc))


@FUZZ
@given(st.text(max_size=200))
def test_arbitrary_text_fails_only_with_config_errors(text: str) -> None:
    check(text)


@FUZZ
@given(st.dictionaries(st.sampled_from(["rig", "clock", "devices", "description", "x"]), values, max_size=4))
def test_generated_rig_profiles_fail_only_with_config_errors(tmp_path_factory: Any, doc: dict) -> None:
    path = tmp_path_factory.mktemp("rig") / "rig.yaml"
    path.write_text(yaml.safe_dump(doc))
    try:
        plan(ROOT / "scenarios" / "smoke.yaml", load_rig(path))
    except ConfigError as err:
        assert err.file in (str(path), str(ROOT / "scenarios" / "smoke.yaml"))
