"""The Docker image: its inputs checked offline, then built and run for real as an admin runs it.

The offline tests always run: which TensorFlow the Dockerfile picks, and the pins it installs from
(docker/constraints.txt). The smoke test needs a Docker engine (`docker info` must work: DOCKER_HOST
or the default socket) and the python:3.11-slim-bookworm base image (pulled from a registry, or
built by ../shared/tools/docker/base-image.sh where none is reachable). Without an engine it is
skipped; `make test-docker` (TEST_DOCKER=required) fails instead.

It builds with the legacy builder (DOCKER_BUILDKIT=0: no front-end image to fetch, and the builder
where TARGETARCH is empty) on the host network, and runs the containers on the host network, so
that they reach the Telegram emulator on 127.0.0.1 (tests/telegram_emulator).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import sqlite3
import subprocess
import time
import tomllib
import uuid
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
CONSTRAINTS = ROOT / "docker" / "constraints.txt"
IMAGE = "cervantes:test"
STARTUP_S = 300  # TensorFlow's import and the warm-up compile of every batch shape, on 2 busy cores
LENGTH = 60  # characters of the /cervantes reply


# --- offline: the Dockerfile's inputs ------------------------------------------------------------

@pytest.mark.parametrize("variant, targetarch, dpkg_arch, chosen", [
    ("cpu", "amd64", "amd64", "tensorflow-cpu"),
    ("cpu", "arm64", "amd64", "tensorflow"),  # BuildKit cross-building
    ("cpu", "", "arm64", "tensorflow"),  # the legacy builder on arm64: tensorflow-cpu has no wheel there
    ("cpu", "", "amd64", "tensorflow-cpu"),
    ("gpu", "", "amd64", "tensorflow[and-cuda]"),
])
def test_the_image_picks_the_tensorflow_its_architecture_has(tmp_path, variant, targetarch, dpkg_arch, chosen):
    fake = tmp_path / "dpkg"  # stands for the base image's dpkg
    fake.write_text(f"#!/bin/sh\n[ \"$1\" = --print-architecture ] && echo {dpkg_arch}\n")
    fake.chmod(0o755)
    result = subprocess.run(["sh", ROOT / "docker" / "tensorflow.sh", variant, targetarch], capture_output=True,
                            text=True, env={**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"})
    assert (result.returncode, result.stdout) == (0, chosen + "\n"), result.stderr


def test_an_unknown_variant_stops_the_build_and_says_why():
    result = subprocess.run(["sh", ROOT / "docker" / "tensorflow.sh", "tpu", "amd64"], capture_output=True, text=True)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr == "TF_VARIANT must be cpu or gpu, not 'tpu'\n"


def test_the_dockerfile_fetches_no_frontend_image():
    """A `# syntax=` line makes BuildKit pull docker/dockerfile from a registry, and nothing needs it."""
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    assert not [line for line in lines if re.match(r"#\s*syntax\s*=", line, re.IGNORECASE)]


def pins() -> dict[str, str]:
    """docker/constraints.txt as {normalized name: version}; every line a `name==version`."""
    found = {}
    for line in CONSTRAINTS.read_text().splitlines():
        if line and not line.startswith("#"):
            assert re.fullmatch(r"[A-Za-z0-9._-]+==[A-Za-z0-9.+!-]+", line), f"not an exact pin: {line!r}"
            name, version = line.split("==")
            found[canonicalize_name(name)] = version
    return found


def test_the_pins_cover_every_runtime_dependency_within_its_range():
    """A dependency bumped in pyproject.toml without `make lock` fails here, not in a build."""
    pinned = pins()
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for dependency in dependencies:
        requirement = Requirement(dependency)
        names = [requirement.name]
        if requirement.name == "tensorflow":  # the image installs one of the two (docker/tensorflow.sh)
            names.append("tensorflow-cpu")
        for name in names:
            version = pinned.get(canonicalize_name(name))
            assert version is not None, f"{name} is not pinned in docker/constraints.txt: run make lock"
            assert requirement.specifier.contains(version, prereleases=True), \
                f"{name}=={version} in docker/constraints.txt is outside {dependency!r}: run make lock"
    assert pinned["tensorflow"] == pinned["tensorflow-cpu"]
    assert not {"pip", "setuptools", "wheel"} & set(pinned)  # the base image's own


# --- the smoke test: a real engine ------------------------------------------------------------------

def docker(*args: str, timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, **kwargs)


def engine_missing() -> str | None:
    """Why no Docker engine can be used here, or None."""
    if shutil.which("docker") is None:
        return "no docker command"
    try:
        info = docker("info", "--format", "{{.ServerVersion}}", timeout=20)
    except subprocess.TimeoutExpired:
        return "docker info did not answer in 20 s"
    if info.returncode != 0:
        said = (info.stderr.strip().splitlines() or ["?"])[-1]
        return f"no Docker engine reachable ({said})"
    return None


@pytest.fixture(scope="module")
def image() -> str:
    """The image, built from this checkout (the layer cache makes a rebuild quick)."""
    if reason := engine_missing():
        message = (f"{reason}: the image cannot be built. Start one (../shared/tools/docker/dockerd-local.sh "
                   "start, and export the DOCKER_HOST it prints), then make test-docker")
        if os.environ.get("TEST_DOCKER") == "required":
            pytest.fail(message)
        pytest.skip(message)
    if not (ROOT / "model" / "shipped" / "model.weights.h5").exists():
        pytest.skip("no shipped model yet (model/shipped): the image carries it")
    env = {**os.environ, "DOCKER_BUILDKIT": os.environ.get("DOCKER_BUILDKIT", "0")}
    build = subprocess.run(["docker", "build", "--network", "host", "--tag", IMAGE, str(ROOT)], env=env,
                           capture_output=True, text=True, timeout=3600, stdin=subprocess.DEVNULL)
    assert build.returncode == 0, build.stdout[-6000:] + build.stderr[-6000:]
    return IMAGE


def test_the_image_generates_offline(image):
    result = docker("run", "--rm", "--network", "none", image,
                    "cervantes", "generate", "Sancho", "--length", "40", "--seed", "7", timeout=300)
    assert result.returncode == 0, result.stderr
    text = result.stdout.removesuffix("\n")
    assert text.startswith("Sancho") and len(text) == len("Sancho") + 40, result.stdout


def test_the_image_installs_the_pinned_versions(image):
    result = docker("run", "--rm", "--network", "none", image, "pip", "freeze", timeout=120)
    assert result.returncode == 0, result.stderr
    installed = {}
    for line in result.stdout.splitlines():
        name, _, version = line.partition("==")
        if canonicalize_name(name.split(" @ ")[0]) != "cervantes":
            installed[canonicalize_name(name)] = version
    pinned = pins()
    unpinned = {f"{name}=={version}" for name, version in installed.items() if pinned.get(name) != version}
    assert not unpinned, f"installed, but not as docker/constraints.txt pins them: {sorted(unpinned)}"
    assert installed["tensorflow-cpu"] == pinned["tensorflow-cpu"]  # amd64, CPU: the small one


def test_a_start_without_a_token_fails_in_one_line(image):
    started = time.monotonic()
    result = docker("run", "--rm", "--network", "none", image, timeout=120)
    output = (result.stdout + result.stderr).strip().splitlines()
    assert result.returncode != 0
    assert len(output) == 1 and "TELEGRAM_TOKEN" in output[0], output
    assert time.monotonic() - started < 60  # before TensorFlow loads: no restart loop of slow failures


def health(name: str) -> tuple[int, str]:
    result = docker("exec", name, "cervantes", "health", timeout=30)
    return result.returncode, (result.stdout + result.stderr).strip()


def state(name: str, field: str) -> str:
    return docker("inspect", "--format", "{{" + field + "}}", name).stdout.strip()


def logs(name: str) -> str:
    result = docker("logs", name)
    return result.stdout + result.stderr


async def until(condition, timeout_s: float, what: str, name: str):
    """Poll `condition()` until it returns something true; fail, with the container's logs, at the timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        if found := await asyncio.to_thread(condition):
            return found
        if state(name, ".State.Running") != "true":
            pytest.fail(f"the container stopped while waiting for {what}:\n{logs(name)[-4000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} after {timeout_s:.0f} s:\n{logs(name)[-4000:]}")
        await asyncio.sleep(2)


@pytest.fixture
def container(image):
    name = f"cervantes-test-{uuid.uuid4().hex[:8]}"
    yield name
    docker("rm", "--force", name)


async def test_the_image_serves_telegram_reports_health_and_stops_cleanly(image, container, token, tmp_path):
    """docker run as an admin does, against a local Bot API: answered, healthy, then stopped cleanly."""
    from telegram_emulator.emulator import missing, running
    from telegram_emulator.peer import Peer

    if reason := missing():
        pytest.skip(reason)
    data = tmp_path / "data"  # a bind mount: the container's user (uid 10001) must be able to write it
    data.mkdir()
    if os.geteuid() == 0:
        os.chown(data, 10001, 10001)
    else:
        data.chmod(0o777)
    db = data / "cervantes.db"

    with running("CervantesTestBot") as url:
        peer = Peer(url, token)
        try:
            run = docker("run", "--detach", "--name", container, "--network", "host", "--health-interval", "2s",
                         "--volume", f"{data}:/data", "--env", f"TELEGRAM_TOKEN={token}",
                         "--env", f"CERVANTES_TELEGRAM_BASE_URL={url}/bot", "--env", f"CERVANTES_CHAT_LENGTH={LENGTH}",
                         "--env", "CERVANTES_LOGGING_LEVEL=DEBUG", image)
            assert run.returncode == 0, run.stderr

            code, line = await asyncio.to_thread(health, container)  # TensorFlow is still loading
            assert code == 1 and line.startswith("FAIL: "), line
            ready = await until(lambda: (h := health(container))[0] == 0 and h, STARTUP_S, "healthy status", container)
            assert ready[1].startswith("ok: ") and "telegram connected" in ready[1], ready
            assert await until(lambda: state(container, ".State.Health.Status") == "healthy", 30,
                               "healthy HEALTHCHECK", container)  # the image's own check says so too

            seed = "En un lugar de la Mancha"
            await peer.say(f"/cervantes {seed}")
            replies = await peer.wait_for(1001, lambda r: bool(r) and len(r[-1]) >= len(seed) + LENGTH, timeout=120)
            assert replies[-1].startswith(seed)
            assert db.exists() and Path(f"{db}-wal").exists()  # open, in WAL mode, while it runs
        finally:
            await peer.http.aclose()

    # the Bot API is gone: health says so once the last good getUpdates is 45 s old
    down = await until(lambda: (h := health(container))[0] == 1 and h, 120, "failing health", container)
    assert "telegram DISCONNECTED" in down[1], down

    started = time.monotonic()
    stop = docker("stop", container, timeout=60)  # SIGTERM, then SIGKILL after 10 s
    took = time.monotonic() - started
    assert stop.returncode == 0, stop.stderr
    assert state(container, ".State.ExitCode") == "0" and took < 10, f"exit {state(container, '.State.ExitCode')} " \
                                                                       f"after {took:.1f} s:\n{logs(container)[-4000:]}"
    left = {p.name for p in data.iterdir()} & {"cervantes.db-wal", "cervantes.db-shm", "cervantes.db.status.json"}
    assert not left, f"the database was not closed, or serve did not finish: {sorted(left)} left in /data"
    assert sqlite3.connect(db).execute("PRAGMA integrity_check").fetchone() == ("ok",)

    output = logs(container)
    assert "on the CPU" in output  # serve says which device it runs on
    assert token not in output and token.split(":")[1] not in output, "docker logs shows the bot token"
