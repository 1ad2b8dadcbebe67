"""The container image, built from the Dockerfile and run: the demo's job inside it.

No container registry is reachable here, and containers cannot be started with podman or
docker, but buildah (chroot isolation) builds images and runs commands in them. So the
base is a Debian bookworm root file system bootstrapped from Debian's packages
(`debootstrap`), imported as a local image; every Python package is downloaded on the host
first (pip's configuration here knows the CPU torch wheel and the package mirrors) and
installed in the image with `--no-index`. The compose file is checked with docker-compose's
own `config`. Needs root, buildah, debootstrap and docker-compose: `.ci/run` installs them;
elsewhere the test is skipped, saying so.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.system, pytest.mark.timeout(1500)]
# Named for this run: two copies of the suite on one machine (benchmarks/beside.py) share
# buildah's storage, and one copy's clean-up must not remove the other's images.
BASE = f"localhost/voicedrop-base:bookworm-{os.getpid()}"
IMAGE = f"localhost/voicedrop:test-{os.getpid()}"
CONTEXT = ("Dockerfile", "pyproject.toml", "README.md", "requirements", "voicedrop", "deploy")


NEED_GB = 4  # the root file system, the wheels, buildah's layers


def need(*tools: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("building images needs root")
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (.ci/run installs them)")
    for where in ("/var/tmp", tempfile.gettempdir()):
        free = shutil.disk_usage(where).free / 1e9
        if free < NEED_GB:
            pytest.skip(f"building the image needs {NEED_GB} GB free in {where}: {free:.1f} GB")


def sh(*args: str, **kw: object) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(args, capture_output=True, text=True, **kw)  # type: ignore[call-overload]
    assert done.returncode == 0, f"{' '.join(args)}:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done


def base_image(work: Path) -> None:
    rootfs = work / "rootfs"
    sh("debootstrap", "--variant=minbase", "--include=python3,python3-venv,ca-certificates",
       "bookworm", str(rootfs))  # fmt: skip
    archive = work / "rootfs.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(rootfs, arcname=".")
    container = sh("buildah", "from", "scratch").stdout.strip()
    try:
        sh("buildah", "add", container, str(archive), "/")
        sh("buildah", "commit", "-q", container, BASE)
    finally:
        sh("buildah", "rm", container)


def build_context(work: Path) -> Path:
    context = work / "context"
    context.mkdir()
    for name in CONTEXT:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, context / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, context / name)
    wheels = context / "wheels"
    sh(sys.executable, "-m", "pip", "wheel", "--quiet", "-w", str(wheels),
       "-c", str(ROOT / "requirements" / "constraints.txt"),
       "torch==2.13.0", str(context), "setuptools>=68", "wheel")  # fmt: skip
    shutil.rmtree(context / "build", ignore_errors=True)  # built from the copy: the checkout
    # is never written to
    return context


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> str:
    need("buildah", "debootstrap")
    work = tmp_path_factory.mktemp("container")
    base_image(work)
    context = build_context(work)
    sh("buildah", "bud", "--isolation", "chroot", "--quiet", "--format", "docker", "-t", IMAGE,
       "--build-arg", f"BASE={BASE}", "--build-arg", "EXTRAS=",
       "--build-arg", "PIP_OPTIONS=--no-index", str(context))  # fmt: skip
    yield IMAGE
    subprocess.run(["buildah", "rmi", "-f", IMAGE, BASE], capture_output=True, check=False)


def test_the_image_runs_the_demo_job_as_a_non_root_user(image: str, tmp_path: Path):
    spool = tmp_path / "spool"
    (spool / "inbox").mkdir(parents=True)
    for manifest in (ROOT / "sample_inbox").glob("*.json"):
        shutil.copy(manifest, spool / "inbox")
    os.chmod(spool, 0o777)
    for path in spool.rglob("*"):
        os.chmod(path, 0o777 if path.is_dir() else 0o666)
    container = sh("buildah", "from", image).stdout.strip()
    try:
        user = sh("buildah", "run", "--isolation", "chroot", container, "--", "id", "-u")
        assert user.stdout.strip() == "10001"
        # Not at /spool: that is one of the image's VOLUMEs, and `buildah run` mounts a
        # fresh copy of each image volume too, in an order that varies with the host's other
        # mounts (CI once saw the copy on top of ours). Docker's `-v` has no such ambiguity.
        ran = sh("buildah", "run", "--isolation", "chroot", "--volume", f"{spool}:/drop",
                 container, "--", "voicedrop", "--spool", "/drop", "run", "--once")  # fmt: skip
        locked = tmp_path / "root-owned"  # a host folder the container's user cannot write
        (locked / "inbox").mkdir(parents=True)
        refused = subprocess.run(
            ["buildah", "run", "--isolation", "chroot", "--volume", f"{locked}:/drop",
             container, "--", "voicedrop", "--spool", "/drop", "run", "--once"],
            capture_output=True, text=True,
        )  # fmt: skip
        version = sh("buildah", "run", "--isolation", "chroot", container, "--",
                     "python", "-c", "import torch; print(torch.__version__)")  # fmt: skip
        inspected = json.loads(sh("buildah", "inspect", "--type", "image", image).stdout)
    finally:
        sh("buildah", "rm", container)
    assert "+cpu" in version.stdout
    assert refused.returncode == 2 and "chown -R 10001:10001" in refused.stderr, refused.stderr
    health = inspected["Docker"]["config"]["Healthcheck"]["Test"]
    assert health[-3:] == ["voicedrop", "status", "--health"]
    said = f"{ran.stdout[-3000:]}\n{ran.stderr[-3000:]}"
    assert (spool / "outbox").is_dir(), f"the daemon did not see the mounted spool:\n{said}"
    done = sorted(p.name for p in (spool / "outbox").iterdir())
    assert done == ["flac-48k-loud", "hello-en", "ola-pt", "two-segments"], said
    report = json.loads((spool / "outbox" / "hello-en" / "report.json").read_text())
    assert report["status"] == "done" and report["outputs"][0]["duration_s"] > 0.5
    assert sorted(p.name for p in (spool / "failed").iterdir())  # the demo's bad ones


def test_the_compose_file_is_valid_for_a_compose_implementation(tmp_path: Path):
    need("docker-compose")
    env = {**os.environ, "VOICEDROP_HTTP_TOKEN": "a-token-of-sixteen-chars"}
    config = sh("docker-compose", "-f", str(ROOT / "docker-compose.yml"), "config", env=env)
    assert 'LOW_VRAM: "true"' in config.stdout and 'LOW_VRAM: "false"' in config.stdout
    assert "audio-voice-low-vram:" in config.stdout and "audio-voice-high-perf:" in config.stdout
    assert "/etc/voicedrop/config.toml" in config.stdout and "/health" in config.stdout
    assert config.stdout.count("driver: nvidia") == 2
    missing = subprocess.run(
        ["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "config"],
        capture_output=True, text=True,
        env={k: v for k, v in os.environ.items() if k != "VOICEDROP_HTTP_TOKEN"},
    )  # fmt: skip
    assert missing.returncode != 0 and "VOICEDROP_HTTP_TOKEN" in missing.stderr
