"""The lab's podman network and systemd containers: create, start, check, remove (idempotent)."""

from __future__ import annotations

import glob
import hashlib
import json
import subprocess
import time
from pathlib import Path

from lab_kit.inventory import Host, Lab
from lab_kit.ui import info, step

LABEL = "io.sre-monitoring.lab=1"


class PodmanError(RuntimeError):
    pass


def podman(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise PodmanError(f"podman {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def exec_in(
    host: Host, *cmd: str, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return podman("exec", host.container, *cmd, check=check, timeout=timeout)


def ensure_network(lab: Lab) -> bool:
    """Create the lab's network; True when it had to be created."""
    proc = podman("network", "inspect", lab.network, check=False)
    if proc.returncode == 0:
        subnets = json.dumps(json.loads(proc.stdout))
        if lab.subnet not in subnets:
            raise PodmanError(
                f"network {lab.network} exists with another subnet than {lab.subnet}: "
                f"remove it with 'scripts/lab down' (or 'podman network rm {lab.network}')"
            )
        return False
    if not lab.subnet.startswith("169.254."):
        raise PodmanError(f"lab_subnet {lab.subnet}: use a 169.254.x.0/24 subnet, never a private range")
    podman("network", "create", "--subnet", lab.subnet, "--gateway", lab.gateway,
           "--label", LABEL, lab.network)
    return True


def container_state(host: Host) -> str | None:
    """podman's state of the host's container, None when there is none.

    "stale" when podman records it as running but nothing runs it any more: its processes were
    killed behind podman's back (a machine or a session that ended without `scripts/lab down`,
    a machine restored from a snapshot). Such a container cannot be exec'd into nor started.
    """
    proc = podman("container", "inspect", host.container, "--format", "{{.State.Status}}", check=False)
    if proc.returncode != 0:
        return None
    state = proc.stdout.strip()
    if state == "running" and podman("exec", host.container, "true", check=False, timeout=60).returncode != 0:
        return "stale"
    return state


def run_container(lab: Lab, host: Host) -> None:
    args = [
        "run", "-d", "--name", host.container, "--hostname", host.name,
        "--network", lab.network, "--ip", host.address,
        "--systemd=always", "--stop-signal=SIGRTMIN+3", "--label", LABEL,
        # fact gathering stalls ~10 s when the hostname does not resolve locally
        "--add-host", f"{host.name}:127.0.1.1",
    ]
    for other in lab.hosts.values():
        if other.name != host.name:
            args += ["--add-host", f"{other.name}:{other.address}"]
    for p in host.ports:
        args += ["-p", f"127.0.0.1:{p.host}:{p.container}"]
    podman(*args, lab.image, "/sbin/init")


CONTAINERFILE = Path(__file__).with_name("Containerfile")
DIGEST_LABEL = "io.sre-monitoring.lab.containerfile"


def ensure_image(lab: Lab) -> bool:
    """Build the lab's host image from the bootstrap image; True when it was (re)built."""
    if podman("image", "exists", lab.base_image, check=False).returncode != 0:
        raise PodmanError(f"image {lab.base_image} is missing: run 'make bootstrap'")
    want = hashlib.sha256(CONTAINERFILE.read_bytes() + lab.base_image.encode()).hexdigest()[:16]
    proc = podman("image", "inspect", lab.image, "--format", f'{{{{index .Labels "{DIGEST_LABEL}"}}}}',
                  check=False)
    if proc.returncode == 0 and proc.stdout.strip() == want:
        return False
    podman("build", "--quiet", "--build-arg", f"BASE={lab.base_image}",
           "--label", f"{DIGEST_LABEL}={want}", "--label", LABEL,
           "-t", lab.image, "-f", str(CONTAINERFILE), str(CONTAINERFILE.parent), timeout=900)
    return True


def ensure_ssh_key(key: Path) -> str:
    """The lab's SSH key pair (generated once); returns the public key."""
    if not key.exists():
        key.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "sre-lab", "-f", str(key)],
                       check=True)
    return key.with_suffix(".pub").read_text().strip()


def authorize_key(lab: Lab, pubkey: str) -> list[str]:
    changed = []
    for host in lab.hosts.values():
        have = exec_in(host, "cat", "/root/.ssh/authorized_keys", check=False).stdout
        if pubkey in have:
            continue
        script = f"umask 077; mkdir -p /root/.ssh; echo '{pubkey}' > /root/.ssh/authorized_keys"
        exec_in(host, "sh", "-c", script)
        changed.append(host.name)
    return changed


def ensure_containers(lab: Lab) -> list[str]:
    """Create or start every host; returns the names of the hosts that changed."""
    changed = []
    image_id = podman("image", "inspect", lab.image, "--format", "{{.Id}}").stdout.strip()
    for host in lab.hosts.values():
        state = container_state(host)
        if state is not None:
            used = podman("container", "inspect", host.container, "--format", "{{.Image}}").stdout.strip()
            why = ("the host image changed" if used != image_id
                   else "podman says running but its processes are gone" if state == "stale" else None)
            if why:
                info(f"{host.name}: {why}, recreating {host.container}")
                podman("rm", "-f", "-t", "5", host.container)
                state = None
        if state == "running":
            continue
        if state is None:
            run_container(lab, host)
        else:
            podman("start", host.container)
        changed.append(host.name)
    return changed


def wait_booted(lab: Lab, timeout: float = 180) -> None:
    """Wait until systemd on every host has finished booting ("running" or "degraded")."""
    deadline = time.monotonic() + timeout
    pending = dict(lab.hosts)
    last: dict[str, str] = {}
    while pending and time.monotonic() < deadline:
        for name, host in list(pending.items()):
            proc = exec_in(host, "systemctl", "is-system-running", check=False)
            last[name] = (proc.stdout.strip() or proc.stderr.strip())[-300:]
            if last[name] in ("running", "degraded"):
                del pending[name]
        if pending:
            time.sleep(0.5)
    if pending:
        details = []
        for name, host in pending.items():
            jobs = exec_in(host, "systemctl", "list-jobs", "--no-pager", check=False)
            lines = (jobs.stdout or jobs.stderr).splitlines()[:15]
            details.append(f"  {name}: is-system-running says {last.get(name)!r}; pending jobs:\n"
                           + "\n".join("    " + line for line in lines))
        raise PodmanError(
            f"systemd did not finish booting on {', '.join(pending)} within {timeout:.0f}s\n"
            + "\n".join(details)
        )


def wait_ssh(lab: Lab, timeout: float = 90) -> None:
    """Wait until sshd answers on every host (Ansible's way in)."""
    import socket

    deadline = time.monotonic() + timeout
    for host in lab.hosts.values():
        while True:
            try:
                with socket.create_connection((host.address, 22), timeout=1) as s:
                    if s.recv(4).startswith(b"SSH"):
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise PodmanError(f"sshd does not answer on {host.name} ({host.address}:22)")
            time.sleep(0.3)


def _digest(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(p.name.encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


def sync_trust(lab: Lab) -> list[str]:
    """Copy the controller's extra CA certificates and pip.conf in (TLS to PyPI is intercepted here)."""
    certs = [Path(p) for p in glob.glob("/usr/local/share/ca-certificates/*.crt")]
    pip_conf = Path("/etc/pip.conf")
    want = _digest(certs + ([pip_conf] if pip_conf.exists() else []))
    changed = []
    for host in lab.hosts.values():
        have = exec_in(host, "cat", "/etc/lab-trust.sha256", check=False).stdout.strip()
        if have == want:
            continue
        for cert in certs:
            podman("cp", str(cert), f"{host.container}:/usr/local/share/ca-certificates/{cert.name}")
        if pip_conf.exists():
            podman("cp", str(pip_conf), f"{host.container}:/etc/pip.conf")
        exec_in(host, "update-ca-certificates")
        exec_in(host, "sh", "-c", f"echo {want} > /etc/lab-trust.sha256")
        changed.append(host.name)
    return changed


def remove_all(lab: Lab, *, image: bool = True) -> None:
    for host in lab.hosts.values():
        if container_state(host) is not None:
            step(f"removing container {host.container}")
            podman("rm", "-f", "-t", "5", host.container)
    if podman("network", "exists", lab.network, check=False).returncode == 0:
        step(f"removing network {lab.network}")
        podman("network", "rm", lab.network)
    else:
        info(f"network {lab.network}: already gone")
    if image and podman("image", "exists", lab.image, check=False).returncode == 0:
        step(f"removing image {lab.image}")
        podman("rmi", "-f", lab.image)
