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
