"""Python source that runs inside every sandbox before the model's first cell.

It is baked into the sandbox factory snapshot, so each session starts with these
helpers already defined. The host callbacks ``_rlm_query`` / ``_rlm_batch`` are injected
per session; they take keyword arguments only (eryx maps positional arguments in
alphabetical order) and answer ``{"ok": bool, "value" | "error": str}`` so a failure is a
clean message, never a host traceback.
"""

PRELUDE = r'''
import _eryx as _rlm_eryx
import builtins as _rlm_builtins
import json as _rlm_json
import os as _rlm_os
import random as _rlm_random
import reprlib as _rlm_reprlib
import sys as _rlm_sys
import time as _rlm_time
from itertools import islice as _rlm_islice


class SubCallError(str):
    """A failed item of llm_batch: still text (so joins work), but detectable."""


class SubCallFailed(RuntimeError):
    """Raised by llm_query when the sub-call could not be answered."""


class ScanLimitError(RuntimeError):
    """The cell read and searched as much of a lazy context as one cell may."""


# Bytes of a lazy context this cell read (counted here: reads go to the mount directly)
# and searched (counted by the host, which sends its count with every search reply).
_rlm_scan = {"limit": 0, "read": 0, "searched": 0}
_rlm_ahead = {}  # files of a LazyFolder the host sent before the code asked for them


def _rlm_begin_cell(number):
    global _rlm_shown
    _rlm_random.seed(number)  # so random draws replay
    _rlm_scan["read"] = _rlm_scan["searched"] = 0
    _rlm_ahead.clear()  # files read ahead are read again: a cell reads them as they are
    _rlm_shown = None  # a value a cell left unshown is not the next one's


def _rlm_charge(count):
    total = _rlm_scan["read"] + _rlm_scan["searched"] + count
    if total > _rlm_scan["limit"]:
        raise ScanLimitError(
            f"reading {count:,} more bytes would bring this cell's reads and searches of the "
            f"context to {total:,} bytes, over the {_rlm_scan['limit']:,} one cell may "
            "(cell_scan_mb): go on in the next cell"
        )
    _rlm_scan["read"] += count


_rlm_final = []
answer = {"content": None, "ready": False}


def FINAL(value):
    """End the run with this value as the answer."""
    _rlm_final[:] = [value]
    return value


def FINAL_VAR(name):
    """End the run with the value of the variable called ``name`` (or the object given)."""
    if isinstance(name, str):
        key = name.strip().strip("'\"")
        scope = globals()
        if key in scope:
            value = scope[key]
        elif hasattr(_rlm_builtins, key) and key == "context":
            value = getattr(_rlm_builtins, key)
        else:
            raise NameError(f"FINAL_VAR: no variable named {key!r}; assign it first")
    else:
        value = name
    _rlm_final[:] = [value]
    return value


async def llm_query(prompt):
    """Ask the sub model one prompt; returns its answer as text."""
    reply = await _rlm_query(prompt=str(prompt))
    if reply["ok"]:
        return reply["value"]
    raise SubCallFailed(reply["error"])


async def llm_batch(prompts):
    """Ask the sub model many prompts concurrently; answers come back in order.

    A failed item is a SubCallError (a str starting with "Error:"), the others are
    answers: one bad prompt never loses the rest of the batch.
    """
    replies = await _rlm_batch(prompts=[str(p) for p in prompts])
    if isinstance(replies, dict):
        raise SubCallFailed(replies["error"])
    return [r["value"] if r["ok"] else SubCallError("Error: " + r["error"]) for r in replies]


_rlm_shown = None
# Bounded like a notebook's display: a repr of a 10 MB list would cost the sandbox's
# memory only to be cut to the cell's output limit on the host.
_rlm_repr = _rlm_reprlib.Repr(
    maxlevel=4, maxtuple=100, maxlist=100, maxarray=100, maxdict=100, maxset=100,
    maxfrozenset=100, maxdeque=100, maxstring=20_000, maxlong=20_000, maxother=20_000,
)


def _rlm_show():
    """Print the value the cell's last expression left (see repl/display.py), once."""
    global _rlm_shown
    value, _rlm_shown = _rlm_shown, None
    if value is not None:
        try:
            print(_rlm_repr.repr(value))
        except Exception as exc:
            print(f"(the value could not be shown: {type(exc).__name__}: {exc})")


def _rlm_jsonable(value):
    # allow_nan=False: eryx gives no JSON at all for NaN or infinity, which dropped such
    # an answer silently; refused here, the model reads why.
    return _rlm_json.loads(_rlm_json.dumps(value, default=repr, allow_nan=False))


def _rlm_seal_streams():
    """Close the interpreter's real stdin/stdout/stderr, leaving only captured output.

    eryx captures print() through sys.stdout, but os.write(1, ...), sys.__stdout__ and
    io.FileIO(1) reach the host's own terminal (or a server's log) uncapped. With the
    descriptors closed, such writes fail with EBADF inside the sandbox instead, and
    sys.__stdout__ / sys.__stderr__ point at the captured streams.
    """
    import os
    import sys

    for fd in (0, 1, 2):
        try:
            os.close(fd)
        except OSError:
            pass
    sys.__stdout__, sys.__stderr__ = sys.stdout, sys.stderr


class _RlmHandle:
    """What the lazy handles share: they refuse to become one str, naming what to use."""

    _LIKE = ""  # what the handle stands in for
    _USE = ""  # what to use instead

    def __str__(self):
        raise TypeError(f"the context {self._what()}, too many to make one str: {self._USE}")

    def __format__(self, spec):
        return self.__str__()

    def __getattr__(self, name):
        raise AttributeError(
            f"the context is a {type(self).__name__} handle, not a {self._LIKE}, and has no "
            f"{name!r}: {self._USE}"
        )


class LazyText(_RlmHandle):
    """A text context too large to load, read from /ctx on demand in bounded pieces.

    Offsets are UTF-8 byte offsets (equal to character offsets for ASCII): a 10 GB file
    has no character index. Every cut moves back to the start of the character it falls
    in, so no read splits a character and context[a:b] + context[b:c] == context[a:c].
    """

    MAX_READ = 64 << 20  # one read; more would only fill the sandbox's memory
    _LIKE = "str"
    _USE = (
        "slice it (context[a:b]), read context.lines(offset, count) or "
        "context.chunks(size), or await context.search(pattern); context.size is its size"
    )

    def __init__(self, file, size):
        self._file = file  # the mounted file, or an _RlmStoredFile
        self.size = size

    def _offset(self, value, default):
        return _rlm_clamp(value, default, self.size)

    def _bytes(self, start, stop):
        if stop - start > self.MAX_READ:
            raise ValueError(
                f"a read of {stop - start:,} bytes is over the {self.MAX_READ:,} allowed at "
                "once: use context.chunks(...) or await context.search(...)"
            )
        _rlm_charge(stop - start)
        self._file.seek(start)
        return self._file.read(stop - start)

    def _align(self, offset):
        """The start of the character that holds byte ``offset``."""
        if 0 < offset < self.size:
            back = self._bytes(max(offset - 3, 0), offset + 1)
            offset -= len(back) - 1 - _rlm_char_start(back)
        return offset

    def __getitem__(self, key):
        if isinstance(key, slice):
            if key.step not in (None, 1):
                raise ValueError("the context takes slices without a step")
            start = self._align(self._offset(key.start, 0))
            stop = self._align(self._offset(key.stop, self.size))
            return self._bytes(start, max(start, stop)).decode("utf-8", "replace")
        if not -self.size <= key < self.size:
            raise IndexError("context offset out of range")
        start = self._align(self._offset(key, 0))
        return self._bytes(start, min(start + 4, self.size)).decode("utf-8", "replace")[:1]

    def chunks(self, size=1 << 20, start=0, stop=None):
        """The text from byte ``start`` in pieces of at most ``size`` bytes, cut after a newline
        where a piece holds one."""
        size = max(int(size), 8)
        pos, stop = self._align(self._offset(start, 0)), self._offset(stop, self.size)
        while pos < stop:
            data = self._bytes(pos, min(pos + size, stop))
            if pos + len(data) < stop:
                cut = data.rfind(b"\n") + 1 or _rlm_char_start(data) or len(data)
                data = data[:cut]
            pos += len(data)
            yield data.decode("utf-8", "replace")

    def _lines(self, start):
        rest = ""
        for chunk in self.chunks(start=start):
            lines = (rest + chunk).split("\n")
            rest = lines.pop()
            yield from lines
        if rest:
            yield rest

    def __iter__(self):
        """The lines of the text, without their line breaks."""
        return self._lines(0)

    def lines(self, offset=0, count=10):
        """``count`` lines, starting with the one that holds byte ``offset``."""
        start = self._offset(offset, 0)
        begin = max(start - self.MAX_READ // 2, 0)
        start = self._align(begin + self._bytes(begin, start).rfind(b"\n") + 1)
        return list(_rlm_islice(self._lines(start), max(int(count), 0)))

    async def search(self, pattern, max_hits=100, start=0, stop=None):
        """Regex ``pattern`` over the UTF-8 bytes, run on the host: a list of hits
        {"offset", "match", "line"}, at most ``max_hits``; go on with start=offset+1."""
        return await _rlm_search_context(
            pattern, max_hits, self._offset(start, 0), self._offset(stop, self.size)
        )

    def __len__(self):
        if self.size > _rlm_sys.maxsize:
            raise OverflowError(
                f"the context holds {self.size:,} bytes, more than len() can return in this "
                "32-bit sandbox: use context.size"
            )
        return self.size

    def __contains__(self, text):
        raise TypeError("`in` would read the whole context: await context.search(re.escape(text))")

    def _what(self):
        return f"holds {self.size:,} bytes"

    def __repr__(self):
        return f"<LazyText: {self.size:,} bytes of UTF-8 text, read on demand>"


class LazyFolder(_RlmHandle):
    """A folder of too many files to load: its files, read by the host when asked.

    Keys are paths relative to the folder, in the order of context.keys(). A file
    changed since a cell first read it is refused, not read: earlier cells saw the old
    content.
    """

    _LIKE = "dict"
    _USE = (
        "read context[path] (paths: context.keys()) or await context.search(pattern), "
        "which searches every file"
    )

    def __init__(self, root):
        self._root = root
        self._names = None
        self._index = None
        self._next = None  # the index after the last file read: a loop in order reads ahead

    def _files(self):
        if self._index is None:  # ~100 bytes a file: loaded when first needed
            with open(self._root + "/manifest", "rb") as handle:
                self._names = handle.read().decode("utf-8", "replace").split("\0")[:-1]
            self._index = {name: i for i, name in enumerate(self._names)}
        return self._index

    def keys(self):
        return self._files().keys()

    def __iter__(self):
        return iter(self._files())

    def __len__(self):
        return len(self._files())

    def __contains__(self, path):
        return path in self._files()

    def _fetch(self, start, stop):
        """Files ``start`` to ``stop`` as the host sends them (a MiB's worth at most), by
        index: their bytes, or why one is refused (changed, gone or too large)."""
        data = _rlm_ask(self._root, {"start": start, "stop": stop})
        end = data.index(b"\n") + 1
        got = {}
        for index, size in enumerate(_rlm_json.loads(data[: end - 1]), start):
            got[index] = size if isinstance(size, str) else data[end : end + size]
            end += 0 if isinstance(size, str) else size
        return got

    def _text(self, index, ahead):
        """File ``index``; with ``ahead``, the files after it come in the same request."""
        if index not in _rlm_ahead:
            _rlm_ahead.clear()
            _rlm_ahead.update(self._fetch(index, len(self._names) if ahead else index + 1))
        data = _rlm_ahead.pop(index)
        if isinstance(data, str):
            raise RuntimeError(data)
        _rlm_charge(len(data))
        self._next = index + 1
        return data.decode("utf-8", "replace")

    def __getitem__(self, path):
        index = self._files()[path]
        return self._text(index, index == self._next)  # in order: read ahead

    def get(self, path, default=None):
        return self[path] if path in self._files() else default

    def items(self):
        """(path, text) of every file, in order, read a MiB's worth at a time."""
        self._files()
        for index, name in enumerate(self._names):
            yield name, self._text(index, True)

    def values(self):
        return (text for _, text in self.items())

    async def search(self, pattern, max_hits=100, start=0, stop=None):
        """Regex ``pattern`` over every file's UTF-8 bytes, run on the host: a list of hits
        {"path", "offset", "match", "line"}, at most ``max_hits``; ``start``/``stop`` are
        indices into list(context.keys())."""
        count = len(self)
        return await _rlm_search_context(
            pattern, max_hits, _rlm_clamp(start, 0, count), _rlm_clamp(stop, count, count)
        )

    def _what(self):
        return f"is a folder of {len(self):,} files"

    def __repr__(self):
        return f"<LazyFolder: {len(self):,} files, read on demand>"


def _rlm_clamp(value, default, size):
    """An offset or index within ``size``: None is ``default``, negative counts from the end."""
    if value is None:
        return default
    value = int(value)
    return min(max(value + size if value < 0 else value, 0), size)


async def _rlm_search_context(pattern, max_hits, start, stop):
    reply = await _rlm_search(
        max_hits=int(max_hits),
        pattern=str(pattern),
        read=_rlm_scan["read"],
        start=start,
        stop=stop,
    )
    _rlm_scan["searched"] = reply.get("searched", _rlm_scan["searched"])
    if reply["ok"]:
        return reply["value"]
    raise ValueError(reply["error"])


def _rlm_char_start(data):
    """The index of the first byte of the last character that starts in ``data``."""
    index = len(data) - 1
    while index > 0 and data[index] & 0xC0 == 0x80:
        index -= 1
    return index


class _RlmStoredFile:
    """The file of a lazy context that only the run's store holds: the host reads it."""

    def __init__(self, folder):
        self._folder = folder
        self._position = 0

    def seek(self, position):
        self._position = position

    def read(self, count):
        request = {"start": self._position, "stop": self._position + count}
        data = _rlm_ask(self._folder, request)
        self._position += len(data)
        return data


_rlm_asked = [0]


def _rlm_ask(folder, request):
    """What the host's ``_rlm_fetch`` writes into ``folder`` for ``request``.

    eryx's callbacks can only be awaited, and a read is not: ``_eryx_invoke_async``
    starts the host's ``_rlm_fetch`` at once, on a host thread (pyeryx 0.11), which
    writes the answer into the read-only mount as file ``<number>`` (or
    ``<number>.error``, saying why not); the guest waits for that file to appear, then
    releases the call it never awaited.
    """
    _rlm_asked[0] += 1
    name = f"{folder}/{_rlm_asked[0]}"
    request = {"number": _rlm_asked[0], **request}
    status, value = _rlm_eryx._eryx_invoke_async("_rlm_fetch", _rlm_json.dumps(request))
    if status == 1:  # refused outright: nothing will be written
        raise RuntimeError(f"the context could not be read: {value}")
    try:
        return _rlm_wait(name)
    finally:
        if status == 2:  # still pending in the guest's eyes: each one left cost ~300
            # bytes of sandbox memory for good (15,000 reads: +4.5 MB, measured)
            _rlm_eryx.subtask_cancel_(value[0])
            _rlm_eryx.subtask_drop_(value[0])


def _rlm_wait(name):
    pause = 0.0001
    while not _rlm_os.path.exists(name):
        if _rlm_os.path.exists(name + ".error"):
            with open(name + ".error", encoding="utf-8") as handle:
                raise RuntimeError(handle.read())
        _rlm_time.sleep(pause)
        pause = min(pause * 2, 0.01)
    with open(name, "rb") as handle:
        return handle.read()


def _rlm_bind_context(path, kind, lazy, scan_limit, stored_size=None):
    """Bind ``context``; ``stored_size``: it is lazy text the host reads from its store,
    and ``path`` the folder where the ranges asked for arrive."""
    _rlm_seal_streams()
    _rlm_scan["limit"] = scan_limit
    if stored_size is not None:
        _rlm_builtins.context = LazyText(_RlmStoredFile(path), stored_size)
    elif kind == "folder":
        _rlm_builtins.context = LazyFolder(_rlm_os.path.dirname(path))
    elif lazy:
        _rlm_builtins.context = LazyText(open(path, "rb"), _rlm_os.stat(path).st_size)
    else:
        with open(path, encoding="utf-8", errors="replace") as handle:
            data = handle.read()
        _rlm_builtins.context = _rlm_json.loads(data) if kind != "text" else data
    globals()["_rlm_alive"] = True


def _rlm_collect():
    """Report the bytes of a lazy context the cell read, and (clearing it) a final answer
    given by FINAL, FINAL_VAR or the answer dict."""
    global _rlm_result
    _rlm_result = {"read": _rlm_scan["read"]}
    if _rlm_final:
        value = _rlm_final.pop()  # cleared first: an answer that fails to convert
    elif isinstance(answer, dict) and answer.get("ready"):
        answer["ready"] = False  # must not fail again at every later cell
        value = answer.get("content")
    else:
        return
    _rlm_result = {"read": _rlm_scan["read"], "value": _rlm_jsonable(value)}
'''
