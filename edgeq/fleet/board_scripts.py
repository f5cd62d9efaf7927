"""The Python run on the board: standard library only, Python 3.8, each printing one JSON line.

They are sent as ``python -c`` arguments, so nothing of edgeq has to be installed there first.
``PROBE`` reads versions, sensors (through the runtime wheel put on ``PYTHONPATH``), memory and
disk; ``SYNC`` hashes, stages and swaps a bundle folder; ``INSTALL`` makes the runtime venv.
"""

from __future__ import annotations

PROBE = r"""
import json, os, platform, socket, sys
root, runtime = sys.argv[1], sys.argv[2]
def read(path):
    try:
        with open(path) as handle:
            return handle.read()
    except (OSError, UnicodeDecodeError):
        return None
def version(name):
    try:
        from importlib import metadata
    except ImportError:
        return None
    for dist in (name, name + "-gpu"):
        try:
            return metadata.version(dist)
        except Exception:
            pass
    return None
out = {"python": platform.python_version(), "executable": sys.executable, "machine": platform.machine(),
       "hostname": socket.gethostname(), "nv_tegra_release": read(os.path.join(root, "etc/nv_tegra_release"))}
out["packages"] = dict((n, version(n)) for n in ("numpy", "onnxruntime", "tensorrt"))
if out["packages"]["tensorrt"] is None:
    try:
        import tensorrt
        out["packages"]["tensorrt"] = str(tensorrt.__version__)
    except Exception:
        pass
meminfo = read("/proc/meminfo") or ""
for line in meminfo.splitlines():
    if line.startswith("MemAvailable:"):
        out["mem_available_bytes"] = int(line.split()[1]) * 1024
here = runtime
while here and not os.path.isdir(here):
    here = os.path.dirname(here)
st = os.statvfs(here or ".")
out["disk_free_bytes"] = st.f_bavail * st.f_frsize
out["runtime_installed"] = json.loads(read(os.path.join(runtime, "venv", "edgeq-runtime.json")) or "null")
try:
    from edgeq_runtime.power import discover
    source, reason = discover(root)
    out["power"] = source.description if source is not None else None
    out["power_reason"] = reason
    if source is not None:
        source.close()
except Exception as exc:
    out["power"] = None
    out["power_reason"] = "power sensors not read: " + type(exc).__name__ + ": " + str(exc)
print(json.dumps(out))
"""

SYNC = r"""
import hashlib, json, os, shutil, sys
mode, final = sys.argv[1], sys.argv[2]
def sha(path):
    h = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
def listing(folder):
    found = {}
    for base, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(base, name)
            found[os.path.relpath(path, folder).replace(os.sep, "/")] = path
    return found
if mode == "hashes":
    here = os.path.dirname(os.path.abspath(final))
    while not os.path.isdir(here):
        here = os.path.dirname(here)
    st = os.statvfs(here)
    files = dict((rel, sha(p)) for rel, p in listing(final).items()) if os.path.isdir(final) else {}
    print(json.dumps({"files": files, "free": st.f_bavail * st.f_frsize}))
elif mode == "stage":
    tmp, keep = sys.argv[3], json.loads(sys.argv[4])
    parent, base = os.path.split(final)
    for name in os.listdir(parent or "."):  # copies an interrupted run left behind
        if name.startswith(base + ".tmp-"):
            shutil.rmtree(os.path.join(parent, name), ignore_errors=True)
    os.makedirs(tmp)
    for rel in keep:
        dest = os.path.join(tmp, rel)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        try:
            os.link(os.path.join(final, rel), dest)
        except OSError:
            shutil.copy2(os.path.join(final, rel), dest)
    dirs = sorted(set(os.path.dirname(rel) for rel in json.loads(sys.argv[5]) if os.path.dirname(rel)))
    for rel in dirs:
        os.makedirs(os.path.join(tmp, rel), exist_ok=True)
    print(json.dumps({"staged": tmp}))
elif mode == "commit":
    tmp, expected = sys.argv[3], json.loads(sys.argv[4])
    found = listing(tmp)
    bad = sorted(rel for rel in expected if rel not in found or sha(found[rel]) != expected[rel])
    if bad or set(found) != set(expected):
        shutil.rmtree(tmp, ignore_errors=True)
        sys.stderr.write("error: " + (bad[0] if bad else "extra files") + " arrived damaged; nothing was replaced\n")
        sys.exit(3)
    old = final + ".old"
    shutil.rmtree(old, ignore_errors=True)
    if os.path.isdir(final):
        os.rename(final, old)
    os.rename(tmp, final)
    shutil.rmtree(old, ignore_errors=True)
    print(json.dumps({"committed": final}))
elif mode == "discard":
    shutil.rmtree(sys.argv[3], ignore_errors=True)
    print("{}")
"""

INSTALL = r"""
import json, os, site, subprocess, sys
venv, wheel, digest, version = sys.argv[1:5]
marker = os.path.join(venv, "edgeq-runtime.json")
try:
    with open(marker) as handle:
        if json.load(handle).get("wheel_sha256") == digest:
            print(json.dumps({"installed": False}))
            sys.exit(0)
except (OSError, ValueError):
    pass
python = os.path.join(venv, "bin", "python")
def fail(what, proc):
    lines = [l for l in (proc.stderr or proc.stdout or "").splitlines() if l.strip()]
    sys.stderr.write("error: " + what + ": " + (lines[-1].strip() if lines else "exit status " + str(proc.returncode)) + "\n")
    sys.exit(4)
if not os.path.exists(python):
    made = subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", venv],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
    if made.returncode:
        fail(sys.executable + " -m venv failed (on Debian/Ubuntu: apt install python3-venv)", made)
# The board Python's own packages (numpy, onnxruntime, JetPack's tensorrt) stay visible in the
# venv even when that Python is itself a venv, whose packages --system-site-packages would miss.
paths = [p for p in list(site.getsitepackages()) + [site.getusersitepackages()] if os.path.isdir(p)]
where = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
if where.returncode:
    fail("the runtime venv's Python does not start", where)
with open(os.path.join(where.stdout.strip(), "edgeq-board-python.pth"), "w") as handle:
    handle.write("\n".join(paths) + "\n")
pip = subprocess.run([python, "-m", "pip", "install", "--no-index", "--no-deps", "--force-reinstall",
                      "--disable-pip-version-check", "--quiet", wheel],
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
if pip.returncode:
    fail("pip could not install " + os.path.basename(wheel), pip)
with open(marker + ".tmp", "w") as handle:
    json.dump({"wheel_sha256": digest, "version": version}, handle)
os.replace(marker + ".tmp", marker)
print(json.dumps({"installed": True}))
"""
