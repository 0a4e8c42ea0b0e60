"""The first code the sandboxed interpreter runs (``python -I -S -B guard.py BOX MODE RECORD_FD``), kept as text: it
never runs in our process.

- mode ``bare`` (tests of the kernel layers only): as ``main`` without the audit hook;
- mode ``main``: install the audit hook, run ``BOX/main.py`` as ``__main__`` (stdin/stdout tests, plain runs);
- mode ``tests``: read and delete ``BOX/tests.py`` and ``BOX/nonce`` first (the program never sees the test text or
  the nonce on disk), run the program (a ``SystemExit`` from its script part ends the script part only), then the
  tests, written by ``code_verify`` so that each assert site calls ``__cotdistill_record(site, value)``. A value
  must be plain built-in data (exact types, so no ``__eq__``/``__bool__`` of the program's runs on our side); it
  is encoded and written to RECORD_FD behind the nonce; the comparison happens outside, in ``code_verify``, often
  against an expected value that never entered the sandbox. After the last test: ``NONCE end COUNT``, then
  ``os._exit(0)`` (no atexit handler of the program's runs after it). A program that exits early, or dies, leaves
  no end line and fails.
The audit hook is a last line behind the kernel's (bubblewrap, seccomp): no process creation, sockets, ctypes,
signals to others, writes outside BOX, and no gc/trace/current-frames introspection of the harness.
"""

GUARD = r'''
import builtins, os, sys, types

def _guard():
    root, mode, rec_fd = sys.argv[1], sys.argv[2], int(sys.argv[3])
    real, getpid, write, exit_now, join = os.path.realpath, os.getpid, os.write, os._exit, os.path.join
    typ, fmt, fhex, isinst, anyof, allof, fsdecode = type, format, float.hex, isinstance, any, all, os.fsdecode
    tuple_, set_, fset_, complex_ = tuple, set, frozenset, complex  # as they were: a program may patch them
    WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    DENY = {"os.fork", "os.forkpty", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "subprocess.Popen",
            "os.killpg", "signal.pthread_kill", "socket.__new__", "socket.connect", "socket.bind",
            "socket.getaddrinfo", "ctypes.dlopen", "ctypes.dlsym", "ctypes.cdata", "os.setuid", "os.setsid",
            "os.chroot", "os.putenv", "gc.get_objects", "gc.get_referrers", "gc.get_referents",
            "sys._current_frames", "sys.settrace", "sys.setprofile", "sys.addaudithook"}
    PATHS = {"os.remove": 1, "os.rmdir": 1, "os.mkdir": 1, "os.rename": 2, "os.symlink": 2, "os.link": 2,
             "os.chmod": 1, "os.chown": 1, "os.truncate": 1, "os.utime": 1, "shutil.rmtree": 1}

    def inside(p):
        if isinst(p, int):
            return True
        p = real(fsdecode(p))
        return p == root or p.startswith(root + os.sep)

    def hook(event, args):
        if event in DENY or (event == "import" and args[0].split(".")[0] in ("ctypes", "_ctypes", "cffi")):
            raise PermissionError(f"sandbox: {event} is not allowed")
        if event == "os.kill" and args[0] not in (0, getpid()):
            raise PermissionError("sandbox: signalling another process is not allowed")
        if event == "open":
            m, flags = args[1] or "", args[2] or 0
            if (anyof(c in m for c in "wax+") or flags & WRITE) and not inside(args[0]):
                raise PermissionError(f"sandbox: writing outside the sandbox is not allowed: {args[0]}")
        if event in PATHS and not allof(inside(a) for a in args[:PATHS[event]] if isinst(a, (str, bytes))):
            raise PermissionError(f"sandbox: {event} outside the sandbox is not allowed")

    def take(name):
        p = join(root, name)
        with open(p, "rb") as f:
            data = f.read()
        os.unlink(p)
        return data

    tests = take("tests.py").decode("utf-8") if mode == "tests" else None
    nonce = take("nonce").decode("ascii") if mode == "tests" else None
    source = open(join(root, "main.py"), encoding="utf-8", errors="surrogateescape").read()
    pristine = dict(builtins.__dict__)
    modules = {}  # the standard modules a test may use, as they were before the program could patch them
    if mode == "tests":
        for name in ("math", "cmath", "string", "itertools", "functools", "operator", "collections", "heapq",
                     "bisect", "statistics", "fractions", "decimal", "re"):
            try:
                mod = __import__(name)
                modules[name] = (mod, dict(mod.__dict__))
            except ImportError:
                pass
    iterators = {type(iter([])), type(iter(())), type(iter(range(0))), type(iter({})), type(iter(set())),
                 type(iter("")), map, filter, zip, enumerate, reversed, types.GeneratorType}
    done = [0]

    subclass = issubclass
    to_int, to_float, to_str, to_bytes = int.__int__, float.__float__, str.__str__, bytes.__bytes__
    re_part, im_part = complex.real.__get__, complex.imag.__get__
    list_it, tuple_it, set_it, fset_it, dict_items = list.__iter__, tuple.__iter__, set.__iter__, \
        frozenset.__iter__, dict.items

    def plain(v, depth=0):
        """A copy of v in exact built-in types, made with the base types' own methods (a subclass's namedtuple
        fields survive, its overridden __eq__ or __iter__ does not run); anything else is refused."""
        t = typ(v)
        if t is int or t is float or t is str or t is bool or v is None or t is bytes or t is complex \
                or t is range or t is types.FunctionType or t is types.BuiltinFunctionType \
                or t is types.MethodType or t is type:
            return v
        if depth > 64:
            raise TypeError("test value nested more than 64 deep")
        if subclass(t, bool):
            return v
        if subclass(t, int):
            return to_int(v)
        if subclass(t, float):
            return to_float(v)
        if subclass(t, str):
            return to_str(v)
        if subclass(t, bytes):
            return to_bytes(v)
        if subclass(t, complex):
            return complex_(re_part(v), im_part(v))
        if subclass(t, dict):
            return {plain(k, depth + 1): plain(x, depth + 1) for k, x in dict_items(v)}
        if subclass(t, list):
            return [plain(x, depth + 1) for x in list_it(v)]
        if subclass(t, tuple):
            return tuple_([plain(x, depth + 1) for x in tuple_it(v)])
        if subclass(t, frozenset):
            return fset_([plain(x, depth + 1) for x in fset_it(v)])
        if subclass(t, set):
            return set_([plain(x, depth + 1) for x in set_it(v)])
        raise TypeError(f"test value of type {t.__name__} is not plain data (int, float, str, list, dict, ...)")

    def items(v):
        """A plain copy of v; an iterator (a generator, map, zip, ...) first drained into a tuple, as the standard
        function that consumes it in the test would (at most a million items)."""
        if typ(v) in iterators:
            out, n = [], 0
            for x in v:
                out.append(x)
                n += 1
                if n > 1_000_000:
                    raise TypeError("an iterator of more than a million items")
            v = tuple_(out)
        return plain(v)

    def enc(v, out):
        t = typ(v)
        if t is bool:
            out.append("T" if v else "F")
        elif t is int:
            out.append("i" + fmt(v, "x"))
        elif t is float:
            out.append("f" + fhex(v))
        elif t is complex:
            out.append("c" + fhex(v.real) + "," + fhex(v.imag))
        elif t is str:
            out.append("s" + v.encode("utf-8", "surrogatepass").hex())
        elif t is bytes:
            out.append("b" + v.hex())
        elif v is None:
            out.append("N")
        elif t is range:
            out.append("r" + fmt(v.start, "x") + "," + fmt(v.stop, "x") + "," + fmt(v.step, "x"))
        elif t is dict:
            out.append("d(")
            for k, x in v.items():
                enc(k, out)
                enc(x, out)
            out.append(")")
        elif t is list or t is tuple or t is set or t is frozenset:
            out.append(("l" if t is list else "u" if t is tuple else "e" if t is set else "z") + "(")
            for x in v:
                enc(x, out)
            out.append(")")
        else:
            out.append("?")  # a function or class: it compares by identity, so nothing outside can equal it

    def record(site, value):
        out = []
        enc(value, out)  # the test's expression already passed through plain() where the program's values enter
        write(rec_fd, (nonce + " " + str(site) + " " + " ".join(out) + "\n").encode())
        done[0] += 1

    if mode != "bare":  # "bare": the kernel's layers alone, for the tests that attack them one by one
        sys.addaudithook(hook)
    program = types.ModuleType("__main__")
    program.__dict__["__builtins__"] = builtins
    sys.modules["__main__"] = program  # the guard's own module is not reachable by name
    sys.argv = ["main.py"]
    code = compile(source, "main.py", "exec")
    if mode != "tests":
        exec(code, program.__dict__)
        return
    try:
        exec(code, program.__dict__)
    except SystemExit:
        pass  # its script part ended; its definitions stand and the tests still run
    for mod, saved in modules.values():  # undo the program's patches (math.isclose = lambda *a: True)
        mod.__dict__.clear()
        mod.__dict__.update(saved)
    # the program's functions and classes, but never in place of a builtin or a standard module the test names
    space = {k: v for k, v in program.__dict__.items() if k not in pristine and k not in modules}
    space.update(__builtins__=pristine, __cotdistill_record=record, __cotdistill_plain=plain,
                 __cotdistill_items=items)
    exec(compile(tests, "tests.py", "exec"), space)
    write(rec_fd, (nonce + " end " + str(done[0]) + "\n").encode())
    exit_now(0)

_guard()
'''
