import json

from voicedrop.cli import main


def test_validate_applies_the_daemons_reference_checks(tmp_path, capsys):
    secret = tmp_path / "secret.wav"
    secret.write_bytes(b"RIFF")
    (tmp_path / "drop").mkdir()
    (tmp_path / "drop" / "link.wav").symlink_to(secret)
    manifest = tmp_path / "drop" / "job.json"
    manifest.write_text(json.dumps({"text": "x", "tts": {"engine": "espeak", "voice": "link.wav"}}))
    assert main(["--spool", str(tmp_path / "spool"), "validate", str(manifest)]) == 1
    assert "tts.voice: reference 'link.wav' is a symlink" in capsys.readouterr().out


def test_version(capsys):
    import pytest

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.startswith("voicedrop 0.")


def test_submit_checks_like_the_daemon_and_says_why(tmp_path, capsys):
    manifest = tmp_path / "bad.json"
    manifest.write_text(json.dumps({"text": "x", "tts": {"engine": "nope"}}))
    code = main(["--spool", str(tmp_path / "spool"), "submit", str(manifest)])
    err = capsys.readouterr().err
    assert code == 2 and "tts.engine: unknown engine 'nope'" in err
    assert not list((tmp_path / "spool" / "inbox").glob("*.json")), "a bad manifest was dropped"


def test_status_answers_with_a_broken_configuration_and_exits_2(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("VOICEDROP_SPOOL", str(tmp_path / "spool"))
    monkeypatch.setenv("VOICEDROP_TYPO", "1")  # one stray variable stops every other command
    assert main(["validate", str(tmp_path / "x.json")]) == 2
    capsys.readouterr()
    assert main(["status", "--json"]) == 2  # a script sees the configuration is broken
    captured = capsys.readouterr()
    assert "warning" in captured.err and "VOICEDROP_TYPO" in captured.err
    assert json.loads(captured.out)["daemon"] == "not running"
