"""Mounting the way the system does it: fstab, mount(8), umount(8), fusermount3, systemd.

- The helper calling form (`mountfs.fstab`): argument and option parsing, generic fstab
  options dropped, anything else refused with a message that names it.
- Real mounts made by `mount.fuse3` (the legacy `mountfs#STATE` source and the
  `fuse.mountfs` type) and ended by the system's `umount` or by `fusermount3 -u`: the
  daemon must exit by itself.
- Real `mount -T FSTAB MOUNTPOINT` for each fstab form. `mount` runs helpers with a
  scrubbed environment (no PATH: the shell's default path is used) and looks for
  `mount.<type>` in `/sbin` only, so these run in a private mount namespace where
  `/usr/local/bin` holds `mountfs` and `/sbin` also shows `mount.mountfs`, as on a machine
  where they are installed; nothing outside the namespace changes.
- `mountfs service install`: the unit file passes `systemd-analyze verify`, and its
  ExecStart/PIDFile/ExecStop do what systemd would rely on (with stderr as a journal
  stream, so the journal logging is exercised too). No systemd runs here: `systemctl`
  is made to fail (no user bus) or is absent, and the command must cope with both.
"""

from __future__ import annotations

import configparser
import dataclasses
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mountfs.cli.core import main as cli_main
from mountfs.cli.core import mount_options_of
from mountfs.fstab import (
    FLAGS,
    NOT_OPTIONS,
    OPTIONS,
    FstabError,
    HelperCall,
    looks_like_helper_call,
    mount_options,
    parse_argv,
    parse_size,
)
from mountfs.mount import LOG_FILE, PID_FILE, MountOptions
from mountfs.service import mount_arguments, unit_name
from mountfs.sync.transfers import Bandwidth
from tests.support.mount import (
    Account,
    Devices,
    MountProcess,
    is_dead_mount,
    lazy_unmount,
    process_gone,
    run_cli,
)

BIN = Path(sys.executable).parent  # the venv's bin/: `mountfs` and `mount.mountfs` live here
MOUNT_FUSE3 = shutil.which("mount.fuse3", path="/sbin:/usr/sbin")
IS_ROOT = os.geteuid() == 0
STOP_S = 30.0

needs_root = pytest.mark.skipif(not IS_ROOT, reason="umount(8) of a FUSE mount needs root")
needs_mount_fuse3 = pytest.mark.skipif(
    MOUNT_FUSE3 is None, reason="mount.fuse3 is not installed (apt-get install fuse3)"
)


# --- the helper calling form, unit level -----------------------------------------------


def test_fstab_options_are_ours_or_generic_and_dropped(tmp_path: Path) -> None:
    state, mnt = tmp_path / "state", tmp_path / "Cloud"
    generic = (
        "defaults,rw,noatime,nodev,nosuid,dev,suid,exec,noexec,user,nouser,users,auto,"
        "noauto,nofail,_netdev,x-systemd.automount,x-systemd.idle-timeout=60,comment=cloud,"
        "user=me,relatime"
    )
    call = parse_argv([str(state), str(mnt), "-o", f"{generic},log_level=debug,cache_size=2G"])

    assert call == HelperCall(str(state), str(mnt), (*generic.split(","), "log_level=debug",
                              "cache_size=2G"))  # fmt: skip
    assert mount_options(call) == MountOptions(
        mountpoint=mnt, state_dir=state, foreground=False, log_level="DEBUG", cache_size=2 << 30
    )


def test_every_mount_option_is_an_fstab_option_and_reaches_the_unit(tmp_path: Path) -> None:
    """Each `MountOptions` field is an option of fstab (`OPTIONS`/`FLAGS`) and of the unit
    `mountfs service install` writes (`mount_arguments`), with the meaning `mountfs mount`
    gives it: fstab options -> MountOptions -> the unit's `mountfs mount` arguments, parsed
    by the `mount` command itself -> the same MountOptions. A new mount option that is
    forgotten in either place fails here (`--offline-read-timeout` once was)."""
    fields = {f.name for f in dataclasses.fields(MountOptions)} - NOT_OPTIONS
    assert {field for field, _ in [*OPTIONS.values(), *FLAGS.values()]} == fields
    state, mnt = tmp_path / "state", tmp_path / "Cloud"
    options = (
        "noatime,log_level=warning,cache_size=3G,"
        "offline_read_timeout=1.5,bwlimit=10M:off,transfers=9,no_notify"
    )
    call = parse_argv([str(state), str(mnt), "-o", options])

    opts = mount_options(call)

    assert opts == MountOptions(
        mountpoint=mnt,
        state_dir=state,
        log_level="WARNING",
        cache_size=3 << 30,
        offline_read_timeout=1.5,
        bandwidth=Bandwidth(up=10 << 20, down=None),
        in_flight=9,
        notify=False,
    )
    for name in fields:  # every field differs from its default: all must be passed on
        assert getattr(opts, name) != getattr(MountOptions(mnt, state), name), name
    args = mount_arguments(opts)
    assert args == ["--log-level", "WARNING", "--cache-size", str(3 << 30),
                    "--offline-read-timeout", "1.5", "--bwlimit", f"{10 << 20}:off",
                    "--transfers", "9", "--no-notify"]  # fmt: skip
    command = cli_main.commands["mount"]
    with command.make_context("mount", [str(mnt), "--state", str(state), *args]) as ctx:
        assert mount_options_of(**ctx.params) == opts
    assert mount_arguments(MountOptions(mnt, state)) == ["--log-level", "INFO"]  # defaults


def test_helper_flags_come_in_any_order(tmp_path: Path) -> None:
    """mount(8) puts `-sfnv` and `-o` after the paths, and `-t` when the type has a dot."""
    call = parse_argv(["-s", "STATE", "-onoatime", "MNT", "-f", "-n", "-v", "-t", "fuse.mountfs"])

    assert call == HelperCall("STATE", "MNT", ("noatime",), fake=True, sloppy=True, verbose=True)


def test_source_placeholders_use_the_state_option_or_the_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MOUNTFS_STATE", str(tmp_path / "default"))
    mnt = str(tmp_path / "mnt")
    for source in ("", "none", "mountfs"):
        from_option = mount_options(HelperCall(source, mnt, (f"state={tmp_path / 'x'}",)))
        assert from_option.state_dir == tmp_path / "x"
        assert mount_options(HelperCall(source, mnt)).state_dir == tmp_path / "default"
    same = mount_options(HelperCall(str(tmp_path / "x"), mnt, (f"state={tmp_path / 'x'}",)))
    assert same.state_dir == tmp_path / "x"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ("noatime,bogus", "unknown option 'bogus'"),
        ("ro", "read-only mounts are not supported"),
        ("allow_other", "allow_other is not supported"),
        ("sync", "synchronous writes are not supported"),
        ("log_level=loud", "log_level=loud: use DEBUG, INFO"),
        ("cache_size=lots", "cache_size=lots: expected bytes"),
        ("state=", "option state= needs a value"),
        ("state=/elsewhere", "two state directories"),
        ("offline_read_timeout=0", "offline_read_timeout=0: expected seconds, at least 0.1"),
        ("offline_read_timeout=soon", "offline_read_timeout=soon: expected seconds"),
        ("offline_read_timeout", "option offline_read_timeout= needs a value"),
        ("bwlimit=fast", "bwlimit=fast: 'FAST' is not a rate"),
        ("transfers=0", "transfers=0: expected a number from 1 to 64"),
        ("no_notify=yes", "option no_notify takes no value"),
    ],
)
def test_bad_options_are_refused_by_name(options: str, message: str) -> None:
    call = parse_argv(["/some/state", "/some/mnt", "-o", options])
    with pytest.raises(FstabError, match=message):
        mount_options(call)


def test_sloppy_ignores_unknown_options_but_not_refused_ones() -> None:
    assert mount_options(parse_argv(["-s", "/s", "/m", "-o", "bogus,x=1"])).state_dir == Path("/s")
    with pytest.raises(FstabError, match="read-only"):
        mount_options(parse_argv(["-s", "/s", "/m", "-o", "ro"]))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["/s"], "expected a source and a mount point"),
        (["/s", "/m", "/x"], "expected a source and a mount point"),
        (["/s", "/m", "-t", "ext4"], "filesystem type 'ext4' is not mountfs"),
        (["/s", "/m", "-N", "/proc/1/ns/mnt"], "another namespace"),
        (["/s", "/m", "-x"], "option -x not recognized"),
    ],
)
def test_malformed_calls_are_refused(argv: list[str], message: str) -> None:
    with pytest.raises(FstabError, match=message):
        parse_argv(argv)


def test_cache_size_takes_binary_suffixes() -> None:
    assert [parse_size(s) for s in ("4096", "1k", "3M", "2G", "1T")] == [
        4096, 1 << 10, 3 << 20, 2 << 30, 1 << 40,
    ]  # fmt: skip


def test_the_mountfs_program_takes_the_mount_fuse3_form(tmp_path: Path) -> None:
    """`mountfs SOURCE MOUNTPOINT -o OPTS` is routed to the helper; a typo is still a typo."""
    (tmp_path / "mnt").mkdir()
    assert looks_like_helper_call([str(tmp_path / "state"), str(tmp_path / "mnt")])
    assert looks_like_helper_call(["", "/not/yet", "-o", "rw"])
    assert not looks_like_helper_call(["moutn", "/not/a/dir"])
    assert not looks_like_helper_call(["--state", str(tmp_path / "mnt")])

    fake = run_cli(tmp_path / "state", tmp_path / "mnt", "-f", "-o", "rw,noatime,log_level=warning")
    assert fake.returncode == 0, fake.stderr
    assert f"would mount {tmp_path / 'state'} at {tmp_path / 'mnt'} (log level WARNING" in (
        fake.stderr
    )
    refused = run_cli(tmp_path / "state", tmp_path / "mnt", "-o", "rw,bogus")
    assert refused.returncode == 1
    assert "mountfs: unknown option 'bogus'" in refused.stderr
    typo = run_cli("moutn", tmp_path / "mnt2")
    assert typo.returncode == 2
    assert "No such command 'moutn'" in typo.stderr


def test_mount_mountfs_console_script(tmp_path: Path) -> None:
    helper = BIN / "mount.mountfs"
    if not helper.exists():
        pytest.skip(f"{helper} is missing: reinstall the package (pip install -e .)")
    result = subprocess.run(
        [helper, "/s", str(tmp_path), "-s", "-f", "-o", "bogus,cache_size=1M"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "mount.mountfs: would mount /s at" in result.stderr
    assert "cache size 1048576" in result.stderr


# --- real mounts through mount.fuse3 -----------------------------------------------------


@pytest.fixture
def device(mount_factory: Devices) -> MountProcess:
    """A logged-in device of the test's account, not mounted; cleaned up and checked after."""
    mount = mount_factory("cloud", start=False)
    mount.mountpoint.mkdir(parents=True, exist_ok=True)
    MountProcess.live.add(mount)  # its log is attached to a failure report
    return mount


def _env_with_mountfs() -> dict[str, str]:
    """mount.fuse3 runs `mountfs` through /bin/sh: it must be on PATH."""
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}"}


def _fstype(mountpoint: Path) -> str | None:
    for line in Path("/proc/self/mounts").read_text().splitlines():
        fields = line.split()
        if fields[1] == str(mountpoint):
            return fields[2]
    return None


def _daemon_pid(mount: MountProcess) -> int:
    pid = mount.pid
    assert not process_gone(pid)
    return pid


def _wait_gone(pid: int, mount: MountProcess) -> None:
    deadline = time.monotonic() + STOP_S
    while not process_gone(pid):
        assert time.monotonic() < deadline, f"daemon {pid} still running:\n{mount.logs()}"
        time.sleep(0.02)


@needs_mount_fuse3
@needs_root
def test_mount_fuse3_legacy_form_then_system_umount(device: MountProcess) -> None:
    """fstab `mountfs# MNT fuse state=STATE,...`: mount.fuse3 runs `mountfs '' MNT -o ...`."""
    assert MOUNT_FUSE3 is not None
    result = subprocess.run(
        [MOUNT_FUSE3, "mountfs#", device.mountpoint, "-o",
         f"state={device.state_dir},noatime,_netdev,nofail,log_level=debug"],
        env=_env_with_mountfs(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr + device.logs()
    assert _fstype(device.mountpoint) == "fuse.mountfs"
    pid = _daemon_pid(device)
    (device.mountpoint / "hello.txt").write_text("hello\n")
    assert (device.mountpoint / "hello.txt").read_text() == "hello\n"
    assert " DEBUG " in device.log_path.read_text()  # log_level= reached the daemon

    unmounted = subprocess.run(["umount", device.mountpoint], capture_output=True, text=True)

    assert unmounted.returncode == 0, unmounted.stderr
    _wait_gone(pid, device)
    assert not os.path.ismount(device.mountpoint)
    assert f"unmounted {device.mountpoint}" in device.log_path.read_text()
    assert not (device.state_dir / PID_FILE).exists()


@needs_mount_fuse3
def test_fuse_mountfs_type_then_fusermount3_unmount(device: MountProcess) -> None:
    """fstab type `fuse.mountfs`: mount(8) runs `mount.fuse STATE MNT -o rw -t fuse.mountfs`."""
    assert MOUNT_FUSE3 is not None
    result = subprocess.run(
        [MOUNT_FUSE3, device.state_dir, device.mountpoint, "-o", "rw,cache_size=64M",
         "-t", "fuse.mountfs"],
        env=_env_with_mountfs(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr + device.logs()
    pid = _daemon_pid(device)
    assert device.live_status()["cache_limit_bytes"] == 64 << 20

    unmounted = subprocess.run(["fusermount3", "-u", device.mountpoint], capture_output=True)

    assert unmounted.returncode == 0, unmounted.stderr
    _wait_gone(pid, device)
    assert f"unmounted {device.mountpoint}" in device.log_path.read_text()


@needs_mount_fuse3
def test_a_failed_helper_mount_says_why(tmp_path: Path) -> None:
    (tmp_path / "mnt").mkdir()
    assert MOUNT_FUSE3 is not None
    result = subprocess.run(
        [MOUNT_FUSE3, f"mountfs#{tmp_path / 'no-login'}", tmp_path / "mnt"],
        env=_env_with_mountfs(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 32  # mount(8): mount failure
    assert "no device login" in result.stderr
    assert not os.path.ismount(tmp_path / "mnt")


# --- real mount(8) with an fstab, in a private mount namespace ---------------------------


class MountNamespace:
    """A private mount namespace where mountfs looks installed system-wide.

    `/usr/local/bin` (on the default PATH that mount's helpers get) holds `mountfs`, and
    the `/sbin` directory also shows `mount.mountfs`; `run()` executes a command inside.
    """

    def __init__(self, workdir: Path) -> None:
        bindir, helpers = workdir / "usr-local-bin", workdir / "sbin-extra"
        bindir.mkdir()
        helpers.mkdir()
        (bindir / "mountfs").symlink_to(BIN / "mountfs")
        (helpers / "mount.mountfs").symlink_to(BIN / "mount.mountfs")
        sbin = os.path.realpath("/sbin")
        script = (
            f"mount --bind {shlex.quote(str(bindir))} /usr/local/bin"
            f" && mount -t overlay overlay -o lowerdir={shlex.quote(f'{helpers}:{sbin}')}"
            f" {shlex.quote(sbin)} && echo ready && exec sleep 600"
        )
        self._proc = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        out, err = self._proc.stdout, self._proc.stderr
        assert out is not None
        assert err is not None
        if out.readline().strip() != "ready":
            self._proc.wait(10)
            raise OSError(f"no mount namespace here: {err.read().strip()}")

    def run(self, *args: str | Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["nsenter", "--target", str(self._proc.pid), "--mount", "--", *map(str, args)],
            capture_output=True,
            text=True,
            timeout=60,
        )

    def close(self) -> None:
        self._proc.kill()
        self._proc.wait(10)
        for stream in (self._proc.stdout, self._proc.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def namespace(tmp_path: Path) -> Iterator[MountNamespace]:
    if not IS_ROOT or shutil.which("unshare") is None or shutil.which("nsenter") is None:
        pytest.skip("needs root with unshare(1) and nsenter(1) for a private mount namespace")
    try:
        ns = MountNamespace(tmp_path)
    except OSError as exc:
        pytest.skip(str(exc))
    yield ns
    ns.close()


FSTAB_FORMS = {
    "legacy": "mountfs#{state} {mnt} fuse defaults,_netdev,noauto,user,x-systemd.automount 0 0",
    "subtype": "{state} {mnt} fuse.mountfs noatime,nofail,comment=cloud,log_level=debug 0 0",
    "helper": "{state} {mnt} mountfs defaults,_netdev,users,noexec,cache_size=128M,"
    "offline_read_timeout=2.5,bwlimit=50M,transfers=8,no_notify 0 0",
}


@needs_mount_fuse3
@pytest.mark.parametrize("form", list(FSTAB_FORMS))
def test_mount_from_an_fstab_line_then_umount(
    form: str, device: MountProcess, account: Account, namespace: MountNamespace, tmp_path: Path
) -> None:
    fstab = tmp_path / "fstab"
    fstab.write_text(
        "# mountfs test fstab\n"
        + FSTAB_FORMS[form].format(state=device.state_dir, mnt=device.mountpoint)
        + "\n"
    )
    pid: int | None = None
    try:
        mounted = namespace.run("mount", "-T", fstab, device.mountpoint)
        assert mounted.returncode == 0, mounted.stderr + device.logs()
        pid = _daemon_pid(device)
        found = namespace.run("findmnt", "-n", "-o", "FSTYPE,SOURCE", device.mountpoint)
        assert found.stdout.split() == ["fuse.mountfs", f"mountfs:{account.name}"]
        path = device.mountpoint / "f"
        wrote = namespace.run("sh", "-c", f"echo {form} > '{path}' && cat '{path}'")
        assert wrote.stdout == f"{form}\n", wrote.stderr
        if form == "subtype":
            assert " DEBUG " in device.log_path.read_text()
        if form == "helper":
            assert device.live_status()["cache_limit_bytes"] == 128 << 20

        unmounted = namespace.run("umount", device.mountpoint)

        assert unmounted.returncode == 0, unmounted.stderr
        _wait_gone(pid, device)
        assert f"unmounted {device.mountpoint}" in device.log_path.read_text()
    finally:
        if pid is not None and not process_gone(pid):
            os.kill(pid, signal.SIGKILL)


# --- the systemd user unit ---------------------------------------------------------------


@pytest.fixture
def no_user_manager(tmp_path: Path) -> dict[str, str]:
    """An environment whose `systemctl --user` reaches no manager (as in a container) and
    whose units go to a temporary XDG_CONFIG_HOME."""
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    return {
        **os.environ,
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "XDG_RUNTIME_DIR": str(runtime),
        "DBUS_SESSION_BUS_ADDRESS": f"unix:path={runtime}/no-bus",
    }


def _mountfs(env: dict[str, str], *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mountfs", *map(str, args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _read_unit(path: Path) -> configparser.ConfigParser:
    unit = configparser.ConfigParser(interpolation=None, strict=True)  # no duplicate keys
    unit.read_string(path.read_text())
    return unit


def _verify_unit(path: Path, env: dict[str, str]) -> None:
    """`systemd-analyze --user verify` must accept the unit without a single complaint."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        return  # the structure is still checked by the caller
    result = subprocess.run(
        [analyze, "--user", "verify", path], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert path.name not in result.stderr, result.stderr


def _exec_line(value: str) -> list[str]:
    """An Exec= line as systemd splits it (our units quote like a shell and escape no %/$)."""
    assert "%%" not in value
    assert "$$" not in value
    return shlex.split(value)


def test_service_install_writes_a_unit_that_mounts_and_logs_to_the_journal(
    device: MountProcess, no_user_manager: dict[str, str], tmp_path: Path
) -> None:
    env = no_user_manager
    mountpoint = tmp_path / "My Cloud"  # a space: the Exec lines must quote it

    installed = _mountfs(env, "service", "install", mountpoint, "--state", device.state_dir,
                         "--log-level", "debug", "--cache-size", str(64 << 20),
                         "--offline-read-timeout", "2.5", "--bwlimit", "50M:100M",
                         "--transfers", "8", "--no-notify")  # fmt: skip

    assert installed.returncode == 0, installed.stderr
    unit_path = tmp_path / "config" / "systemd" / "user" / unit_name(mountpoint)
    assert unit_path.name.endswith("-My\\x20Cloud.service")  # named by the escaped path
    assert f"wrote {unit_path}" in installed.stdout
    if shutil.which("systemctl"):  # enabling only links files: it works without a manager
        assert (unit_path.parent / "default.target.wants" / unit_path.name).is_symlink()
        assert "systemctl --user daemon-reload" in installed.stderr
        assert f"systemctl --user start {unit_path.name}" in installed.stderr
    assert mountpoint.is_dir()
    _verify_unit(unit_path, env)
    unit = _read_unit(unit_path)
    service = unit["Service"]
    assert unit["Unit"]["After"] == "network-online.target"
    assert unit["Install"]["WantedBy"] == "default.target"
    assert (service["Type"], service["Restart"]) == ("forking", "on-failure")
    assert service["PIDFile"] == str(device.state_dir / PID_FILE)
    start, stop = _exec_line(service["ExecStart"]), _exec_line(service["ExecStop"])
    assert start[0] == str(BIN / "mountfs")  # absolute: the user manager's PATH is not ours
    assert start[1:] == ["mount", str(mountpoint), "--state", str(device.state_dir),
                         "--log-level", "DEBUG", "--cache-size", str(64 << 20),
                         "--offline-read-timeout", "2.5", "--bwlimit", f"{50 << 20}:{100 << 20}",
                         "--transfers", "8", "--no-notify"]  # fmt: skip
    assert stop == [start[0], "umount", str(mountpoint)]

    # What systemd does with it: ExecStart with stderr on a journal stream, and the unit
    # started once it returns; the main process is the one in PIDFile; ExecStop ends it.
    try:
        _run_like_systemd(service, mountpoint, env, tmp_path / "journal", device)
    finally:
        if os.path.ismount(mountpoint) or is_dead_mount(mountpoint):
            lazy_unmount(mountpoint)


def _run_like_systemd(
    service: configparser.SectionProxy,
    mountpoint: Path,
    env: dict[str, str],
    journal: Path,
    device: MountProcess,
) -> None:
    start, stop = _exec_line(service["ExecStart"]), _exec_line(service["ExecStop"])
    with journal.open("wb") as stream:
        st = os.fstat(stream.fileno())
        unit_env = {**env, "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}", "INVOCATION_ID": "0"}
        started = subprocess.run(start, env=unit_env, stdin=subprocess.DEVNULL, stdout=stream,
                                 stderr=stream, timeout=60)  # fmt: skip
    assert started.returncode == 0, journal.read_text() + device.logs()
    assert os.path.ismount(mountpoint)
    main_pid = int(Path(service["PIDFile"]).read_text())
    assert not process_gone(main_pid)
    (mountpoint / "note").write_text("from the unit\n")

    stopped = subprocess.run(stop, env=env, capture_output=True, text=True, timeout=120)

    assert stopped.returncode == 0, stopped.stderr
    assert process_gone(main_pid)
    assert not os.path.ismount(mountpoint)
    lines = journal.read_text().splitlines()
    assert f"<6>INFO mountfs.mount: mounted {mountpoint}" in "\n".join(lines)
    assert f"<6>INFO mountfs.mount: unmounted {mountpoint}" in "\n".join(lines)
    assert any(line.startswith("<7>DEBUG ") for line in lines)
    assert all(line.startswith("<") for line in lines), lines[:20]  # every entry has a priority
    assert f"unmounted {mountpoint}" in (device.state_dir / LOG_FILE).read_text()  # file kept


def test_service_install_without_systemctl_prints_what_to_run(
    device: MountProcess, no_user_manager: dict[str, str], tmp_path: Path
) -> None:
    empty = tmp_path / "empty-path"
    empty.mkdir()
    env = {**no_user_manager, "PATH": str(empty)}

    installed = _mountfs(env, "service", "install", device.mountpoint, "--state", device.state_dir)

    assert installed.returncode == 0, installed.stderr
    unit_path = tmp_path / "config" / "systemd" / "user" / unit_name(device.mountpoint)
    assert "systemctl is not installed" in installed.stderr
    for command in ("enable", "daemon-reload", "start"):
        assert f"systemctl --user {command}" in installed.stderr
    _verify_unit(unit_path, no_user_manager)

    removed = _mountfs(env, "service", "uninstall", device.mountpoint)

    assert removed.returncode == 0, removed.stderr
    assert not unit_path.exists()


def test_service_uninstall_disables_and_removes_the_unit(
    device: MountProcess, no_user_manager: dict[str, str], tmp_path: Path
) -> None:
    env = no_user_manager
    installed = _mountfs(env, "service", "install", device.mountpoint, "--state", device.state_dir)
    assert installed.returncode == 0, installed.stderr
    unit_path = tmp_path / "config" / "systemd" / "user" / unit_name(device.mountpoint)
    wants = unit_path.parent / "default.target.wants" / unit_path.name

    removed = _mountfs(env, "service", "uninstall", device.mountpoint)

    assert removed.returncode == 0, removed.stderr
    assert f"removed {unit_path}" in removed.stdout
    assert not unit_path.exists()
    assert not wants.is_symlink()
    again = _mountfs(env, "service", "uninstall", device.mountpoint)
    assert again.returncode == 1
    assert "no mountfs unit for" in again.stderr


def test_service_install_needs_a_login(no_user_manager: dict[str, str], tmp_path: Path) -> None:
    result = _mountfs(no_user_manager, "service", "install", tmp_path / "mnt", "--state",
                      tmp_path / "nobody")  # fmt: skip
    assert result.returncode == 1
    assert "no device login" in result.stderr
    assert not (tmp_path / "config").exists()


def test_unit_names_escape_paths_as_systemd_does() -> None:
    escape = shutil.which("systemd-escape")
    if escape is None:
        pytest.skip("systemd-escape is not installed")
    for path in ("/home/me/Cloud", "/tmp/My Cloud/é.x-y", "/srv/.hidden/a_b:c", "/"):
        expected = subprocess.run(
            [escape, "--path", path], capture_output=True, text=True, check=True
        ).stdout.strip()
        assert unit_name(Path(path)) == f"mountfs-{expected}.service"
