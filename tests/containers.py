"""A real container engine for the tests: Debian's podman 4.3, rootful, with its storage in a cache folder outside the
checkout (kept between runs) and its run state on a short tmpfs path, and the images the tests run: a Debian base
made with debootstrap (no registry is reachable), the finders image, and the caesar and CuTEx replay images.

What this machine needs, each seen on it:
- overlay storage, not vfs: vfs copies the whole image for every container (a run of the 820 MB finders image took
  29 s to start on vfs, 0.33 s on overlay). A graphroot never changes driver or runroot after its first use
  ("database graph driver mismatch"), so both are fixed here and the graphroot is named after its driver.
- a short runroot on tmpfs: with a long runroot path every run waited 20 s for a conmon timeout.
- ``default_ulimits`` below the hard limits (no CAP_SYS_RESOURCE: else runc fails with "error setting rlimit type 7")
  and runc rather than crun (cgroup v1 with a hybrid v2 mount).
- no network namespace set up by podman (``netns="none"``, and the runner's ``--network none``): else netavark adds
  iptables chains.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

CACHE = Path(os.environ.get("CAESAR_APPLIANCE_TEST_CACHE", "/var/cache/caesar-appliance-tests"))
RUNROOT = Path("/run/caesar-appliance-tests/podman")
GRAPHROOT = CACHE / "podman-overlay"
CONF_DIR = CACHE / "podman-conf"
PACKAGES = ("podman", "runc", "uidmap", "fuse-overlayfs", "slirp4netns", "catatonit", "debootstrap")
DEBIAN_MIRROR = os.environ.get("CAESAR_APPLIANCE_DEBIAN_MIRROR", "http://deb.debian.org/debian")

BASE_IMAGE = "localhost/caesar-appliance-test-base:bookworm"
REPO = Path(__file__).resolve().parents[1]

CONTAINERS_CONF = """\
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
netns = "none"
init_path = "/usr/bin/catatonit"

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
"""

STORAGE_CONF = f"""\
[storage]
driver = "overlay"
graphroot = "{GRAPHROOT}"
runroot = "{RUNROOT}"
"""


class EngineUnavailable(Exception):
    """Why the tests cannot have a container engine here (not root, packages not installable): they skip with it."""


def podman_environment() -> dict[str, str]:
    """The variables that point podman at the test storage and settings; set for the whole test session so that
    every podman started by a runner (or by a child process) uses them."""
    return {"CONTAINERS_CONF": str(CONF_DIR / "containers.conf"),
            "CONTAINERS_STORAGE_CONF": str(CONF_DIR / "storage.conf")}  # fmt: skip


def prepare_podman() -> dict[str, str]:
    """Install podman when missing (as root), write its settings, check it runs; returns podman_environment()."""
    if os.geteuid() != 0:
        raise EngineUnavailable("the container tests run a rootful podman and need root")
    missing = [p for p in PACKAGES if subprocess.run(["dpkg", "-s", p], capture_output=True).returncode != 0]
    if missing:
        _apt_install(missing)
    CONF_DIR.mkdir(parents=True, exist_ok=True)
    RUNROOT.mkdir(parents=True, exist_ok=True)
    (CONF_DIR / "containers.conf").write_text(CONTAINERS_CONF)
    (CONF_DIR / "storage.conf").write_text(STORAGE_CONF)
    env = podman_environment()
    check = podman(["info", "--format", "{{.Store.GraphDriverName}}"], env=env, check=False)
    if check.returncode != 0:
        raise EngineUnavailable(f"podman does not run here: {check.stderr.strip()[-500:]}")
    return env


def _apt_install(packages: list[str]) -> None:
    if shutil.which("apt-get") is None:
        raise EngineUnavailable(f"{' '.join(packages)} not installed, and there is no apt-get to install them")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    done = subprocess.run(["apt-get", "install", "-y", "-qq", *packages], capture_output=True, text=True, env=env)
    if done.returncode != 0:  # a clean machine's package lists may be missing or old
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True)
        done = subprocess.run(["apt-get", "install", "-y", "-qq", *packages], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise EngineUnavailable(f"could not install {' '.join(packages)}: {done.stderr.strip()[-500:]}")


def podman(args: list[str], env: dict[str, str] | None = None, check: bool = True, **kwargs):
    return subprocess.run(["podman", *args], env={**os.environ, **(env or podman_environment())}, check=check,
                          capture_output=True, text=True, **kwargs)  # fmt: skip


def image_exists(name: str) -> bool:
    return podman(["image", "exists", name], check=False).returncode == 0


def image_label(name: str, label: str) -> str | None:
    found = podman(["image", "inspect", "--format", f"{{{{index .Labels {label!r}}}}}".replace("'", '"'), name],
                   check=False)  # fmt: skip
    value = found.stdout.strip()
    return value if found.returncode == 0 and value not in ("", "<no value>") else None


def build_base_image() -> str:
    """A Debian bookworm image with python3 (and venv, for pip), made with debootstrap and imported; built only when
    missing (60-90 s)."""
    if image_exists(BASE_IMAGE):
        return BASE_IMAGE
    begun = time.monotonic()
    with tempfile.TemporaryDirectory(dir=CACHE) as scratch:
        rootfs = Path(scratch) / "rootfs"
        subprocess.run(["debootstrap", "--variant=minbase", "--include=python3,python3-venv,ca-certificates",
                        "bookworm", str(rootfs), DEBIAN_MIRROR], check=True, capture_output=True)  # fmt: skip
        shutil.rmtree(rootfs / "var/cache/apt/archives", ignore_errors=True)
        shutil.rmtree(rootfs / "var/lib/apt/lists", ignore_errors=True)
        tar = subprocess.Popen(["tar", "--numeric-owner", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        subprocess.run(["podman", "import", "--change", 'CMD ["/bin/bash"]', "-", BASE_IMAGE], stdin=tar.stdout,
                       env={**os.environ, **podman_environment()}, check=True, capture_output=True)  # fmt: skip
        tar.wait()
    print(f"built {BASE_IMAGE} in {time.monotonic() - begun:.0f} s")
    return BASE_IMAGE


def sha256_of(*parts: Path | bytes) -> str:
    """One digest of files' names and contents (and of bytes given as they are)."""
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, bytes):
            digest.update(part)
        else:
            digest.update(part.name.encode() + b"\0" + part.read_bytes())
    return digest.hexdigest()


def remove_containers(label: str = "caesar-appliance.job") -> None:
    """Every container the tests' runners made (they carry the runner's job label), running or not."""
    names = podman(["ps", "-a", "-q", "--filter", f"label={label}"], check=False).stdout.split()
    if names:
        podman(["rm", "-f", "-t", "0", *names], check=False)


def finders_image() -> str:
    """The finders image of this checkout's version, built by ``./manage image`` on the Debian base (from the last
    commit) when it is missing or was built from another requirements.lock or version."""
    from appliance import __version__

    name = f"localhost/caesar-appliance-finders:{__version__}"
    lock = hashlib.sha256((REPO / "requirements.lock").read_bytes()).hexdigest()  # as ./manage image labels it
    if image_label(name, "caesar-appliance.lock-sha256") == lock and image_label(name, "caesar-appliance.version") == (
        __version__
    ):
        return name
    begun = time.monotonic()
    subprocess.run([str(REPO / "manage"), "image", "--base", build_base_image(), "--engine", "podman", "--wheels",
                    str(CACHE / "wheels")], cwd=REPO, env={**os.environ, **podman_environment()}, check=True,
                   capture_output=True)  # fmt: skip
    print(f"built {name} in {time.monotonic() - begun:.0f} s")
    return name


CAESAR_REPLAY_IMAGE = "localhost/caesar-appliance-test/caesar-replay:latest"
CUTEX_IMAGE = "localhost/caesar-appliance-test/cutex-curvature:latest"
IMAGES = REPO / "tests" / "images"


def caesar_replay_image(shared_data: Path) -> str:
    """The caesar replay image (tests/images/caesar-replay) with the recorded runs of ``shared_data/caesar-runs``
    copied into its build context (never into the checkout), each with the SHA-256 of its input image's data unit;
    built when missing or when its files or the runs changed."""
    runs = sorted(p for p in (shared_data / "caesar-runs").iterdir() if (p / "config.cfg").is_file())
    recorded = ("config.cfg", "run.log", "catalog.dat", "catalog.json", "catalog_fitcomp.dat", "catalog_fitcomp.json",
                "ds9.reg", "ds9_fitcomp.reg", "README.md")  # fmt: skip
    source = IMAGES / "caesar-replay"
    files = sorted(source.iterdir())
    key = sha256_of(*files, *(run / name for run in runs for name in recorded), BASE_IMAGE.encode())
    if image_label(CAESAR_REPLAY_IMAGE, "caesar-appliance.source-sha256") == key:
        return CAESAR_REPLAY_IMAGE
    import runpy

    data_sha256 = runpy.run_path(str(source / "FindSource"), run_name="replay")["fits_data_sha256"]
    with tempfile.TemporaryDirectory(dir=CACHE) as context:
        for path in files:
            shutil.copy(path, context)
        for run in runs:
            target = Path(context) / "runs" / run.name
            target.mkdir(parents=True)
            for name in recorded:
                shutil.copy(run / name, target)
            given = _config_value(run / "config.cfg", "inputFile")
            image = run / given if (run / given).is_file() else shared_data / given
            (target / "input.sha256").write_text(data_sha256(image) + "\n")
        _build(CAESAR_REPLAY_IMAGE, context, BASE_IMAGE, key)
    return CAESAR_REPLAY_IMAGE


def cutex_image(finders: str) -> str:
    """The CuTEx stand-in image (tests/images/cutex-curvature), on the finders image ``finders``."""
    source = IMAGES / "cutex-curvature"
    files = sorted(source.iterdir())
    finders_id = podman(["image", "inspect", "--format", "{{.Id}}", finders]).stdout.strip()
    key = sha256_of(*files, finders_id.encode())
    if image_label(CUTEX_IMAGE, "caesar-appliance.source-sha256") == key:
        return CUTEX_IMAGE
    with tempfile.TemporaryDirectory(dir=CACHE) as context:
        for path in files:
            shutil.copy(path, context)
        _build(CUTEX_IMAGE, context, finders, key)
    return CUTEX_IMAGE


def _build(name: str, context: str, base: str, key: str) -> None:
    begun = time.monotonic()
    built = podman(["build", "--network", "none", "--pull-never", "--tag", name, "--build-arg", f"BASE={base}",
                    "--build-arg", f"SOURCE_SHA256={key}", context], check=False)  # fmt: skip
    if built.returncode != 0:
        raise RuntimeError(f"podman build of {name} failed: {built.stderr.strip()[-2000:]}")
    print(f"built {name} in {time.monotonic() - begun:.1f} s")


def _config_value(path: Path, key: str) -> str:
    for line in path.read_text().splitlines():
        name, _, rest = line.partition("=")
        if name.strip() == key:
            return rest.split("|", 1)[0].split("!", 1)[0].strip()
    raise KeyError(f"{path} has no {key}")


DOCKER_DIR = Path("/run/caesar-appliance-tests/docker")
DOCKER_ROOT = CACHE / "docker-overlay2"
DOCKER_HOST = f"unix://{DOCKER_DIR}/docker.sock"


def start_dockerd() -> subprocess.Popen[bytes]:
    """Debian's dockerd (docker.io, installed when missing) on its own socket, storage and run folder: no iptables,
    no bridge, ulimits below the hard limits; returns the process (stop it with stop_dockerd). The base image is
    copied in from podman (docker load of podman save)."""
    if os.geteuid() != 0:
        raise EngineUnavailable("the docker tests start their own dockerd and need root")
    if subprocess.run(["dpkg", "-s", "docker.io"], capture_output=True).returncode != 0:
        _apt_install(["docker.io"])
    DOCKER_DIR.mkdir(parents=True, exist_ok=True)
    DOCKER_ROOT.mkdir(parents=True, exist_ok=True)
    log = (DOCKER_DIR / "dockerd.log").open("ab")
    daemon = subprocess.Popen(
        ["/usr/sbin/dockerd", "--data-root", str(DOCKER_ROOT), "--exec-root", str(DOCKER_DIR / "exec"), "--pidfile",
         str(DOCKER_DIR / "docker.pid"), "-H", DOCKER_HOST, "--storage-driver", "overlay2", "--iptables=false",
         "--ip6tables=false", "--bridge=none", "--default-ulimit", "nofile=1024:1024", "--default-ulimit",
         "nproc=1024:1024"],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    env = {**os.environ, "DOCKER_HOST": DOCKER_HOST, "DOCKER_BUILDKIT": "0"}
    deadline = time.monotonic() + 30
    while subprocess.run(["docker", "version"], env=env, capture_output=True).returncode != 0:
        if daemon.poll() is not None or time.monotonic() > deadline:
            stop_dockerd(daemon)
            raise EngineUnavailable(f"dockerd did not start: see {DOCKER_DIR / 'dockerd.log'}")
        time.sleep(0.2)
    if subprocess.run(["docker", "image", "inspect", BASE_IMAGE], env=env, capture_output=True).returncode != 0:
        saved = subprocess.Popen(["podman", "save", BASE_IMAGE], stdout=subprocess.PIPE,
                                 env={**os.environ, **podman_environment()})  # fmt: skip
        subprocess.run(["docker", "load"], stdin=saved.stdout, env=env, check=True, capture_output=True)
        saved.wait()
    return daemon


def remove_docker_containers(label: str = "caesar-appliance.job") -> None:
    env = {**os.environ, "DOCKER_HOST": DOCKER_HOST}
    names = subprocess.run(["docker", "ps", "-a", "-q", "--filter", f"label={label}"], env=env, capture_output=True,
                           text=True).stdout.split()  # fmt: skip
    if names:
        subprocess.run(["docker", "rm", "-f", *names], env=env, capture_output=True)


def stop_dockerd(daemon: subprocess.Popen[bytes]) -> None:
    daemon.terminate()
    try:
        daemon.wait(timeout=30)
    except subprocess.TimeoutExpired:
        daemon.kill()
        daemon.wait()
