from pathlib import Path

import pytest

from voicedrop.config import load_settings
from voicedrop.errors import ConfigError


def write_toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_defaults_without_config_or_env():
    s = load_settings(env={})
    assert s.low_vram is False
    assert s.policy == "normal"
    assert s.limits.max_manifest_bytes == 64 * 1024


def test_file_overrides_defaults_and_env_overrides_file(tmp_path):
    cfg = write_toml(tmp_path, 'low_vram = true\nspool = "here"\n[watcher]\nmode = "polling"\n')
    s = load_settings(cfg, env={})
    assert s.low_vram and s.policy == "low"
    assert s.spool == tmp_path / "here"  # relative to the config file
    assert s.watcher.mode == "polling"
    s = load_settings(
        cfg,
        env={
            "LOW_VRAM": "false",
            "VOICEDROP_SPOOL": "/srv/spool",
            "VOICEDROP_WATCHER__MODE": "inotify",
        },
    )
    assert not s.low_vram and s.policy == "normal"
    assert s.spool == Path("/srv/spool")
    assert s.watcher.mode == "inotify"


def test_cli_overrides_env(tmp_path):
    s = load_settings(env={"VOICEDROP_SPOOL": "/env"}, overrides={"spool": tmp_path})
    assert s.spool == tmp_path


def test_config_path_from_environment(tmp_path):
    cfg = write_toml(tmp_path, "low_vram = true\n")
    assert load_settings(env={"VOICEDROP_CONFIG": str(cfg)}).low_vram


@pytest.mark.parametrize("raw", ["TRUE", "True", "true"])
def test_low_vram_true_in_every_spelling_the_original_accepts(raw):
    assert load_settings(env={"LOW_VRAM": raw}).low_vram


@pytest.mark.parametrize("raw", ["yes", "1", "", "on"])
def test_low_vram_invalid_value_names_key_value_and_allowed(raw):
    with pytest.raises(ConfigError) as err:
        load_settings(env={"LOW_VRAM": raw})
    assert "LOW_VRAM" in err.value.message
    assert repr(raw) in err.value.message
    assert "'true' or 'false'" in err.value.message


def test_invalid_value_names_key_value_source_and_allowed(tmp_path):
    cfg = write_toml(tmp_path, '[residency]\npolicy = "greedy"\n')
    with pytest.raises(ConfigError) as err:
        load_settings(cfg, env={})
    msg = err.value.message
    assert "residency.policy" in msg and "'greedy'" in msg and str(cfg) in msg
    assert "'low'" in msg and "'budget'" in msg


def test_invalid_env_value_names_the_variable():
    with pytest.raises(ConfigError) as err:
        load_settings(env={"VOICEDROP_WATCHER__STABLE_DELAY_S": "soon"})
    assert "VOICEDROP_WATCHER__STABLE_DELAY_S" in err.value.message


def test_unknown_key_is_refused(tmp_path):
    cfg = write_toml(tmp_path, "lowvram = true\n")
    with pytest.raises(ConfigError, match="lowvram"):
        load_settings(cfg, env={})


def test_budget_policy_and_budget_value():
    s = load_settings(
        env={"VOICEDROP_RESIDENCY__POLICY": "budget", "VOICEDROP_RESIDENCY__BUDGET_GB": "4.5"}
    )
    assert s.policy == "budget" and s.residency.budget_gb == 4.5
    with pytest.raises(ConfigError, match="budget_gb"):
        load_settings(env={"VOICEDROP_RESIDENCY__BUDGET_GB": "-1"})


def test_missing_or_broken_config_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml", env={})
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(write_toml(tmp_path, "low_vram = = 1"), env={})


def test_settings_are_frozen():
    s = load_settings(env={})
    with pytest.raises(ValueError):
        s.low_vram = True  # type: ignore[misc]


def test_shipped_config_toml_is_valid_and_documents_every_key():
    root = Path(__file__).resolve().parents[2]
    s = load_settings(root / "config.toml", env={})
    text = (root / "config.toml").read_text()
    for key in (
        "low_vram",
        "spool",
        "max_attempts",
        "stable_delay_s",
        "policy",
        "budget_gb",
        "warm_budget_gb",
        "headroom_gb",
        "max_skips",
        "max_queue",
        "interval_s",
    ):
        assert f"{key} =" in text
    assert s.policy == "normal"


def test_an_environment_error_names_the_variable_not_the_validators_internals():
    with pytest.raises(ConfigError) as err:
        load_settings(env={"VOICEDROP_RESIDENCY__BUDGET_GB": "lots"})
    message = err.value.message
    assert "residency.budget_gb = 'lots' (from VOICEDROP_RESIDENCY__BUDGET_GB)" in message
    assert "'auto'" in message and ".float" not in message and "literal[" not in message
    with pytest.raises(ConfigError, match=r"foo = '1' \(from VOICEDROP_FOO\).*not a voicedrop"):
        load_settings(env={"VOICEDROP_FOO": "1"})


def test_a_node_sets_its_own_model_paths_and_nothing_else(tmp_path, monkeypatch):
    """A Ray worker host whose model folders are elsewhere than the head's."""
    from voicedrop.cluster.worker import on_this_node

    head = load_settings(env={}, overrides={"model_roots": ["/srv/models"],
                                             "engines": {"xtts": {"model_dir": "/srv/models/x"},
                                                         "espeak": {"rate": 170}}})  # fmt: skip
    node = tmp_path / "node.toml"
    node.write_text('model_roots = ["models"]\n[engines.xtts]\nmodel_dir = "/data/xtts"\n')
    monkeypatch.setenv("VOICEDROP_NODE_CONFIG", str(node))
    here = on_this_node(head)
    assert here.model_roots == [tmp_path / "models"]
    assert here.engines["xtts"]["model_dir"] == "/data/xtts"
    assert here.engines["espeak"]["rate"] == 170  # what the node does not set is the head's
    node.write_text('spool = "/elsewhere"\n')
    with pytest.raises(ConfigError) as err:
        on_this_node(head)
    assert "spool cannot be set here" in err.value.message
