"""What the staging host runs to hash files: shell text for `RemoteSide`'s hashing execs.

A leaf: no kaic imports. The commands need only a POSIX shell and coreutils on the host;
they use OpenSSL and python3 where the host has them, because they are faster there.
"""

from __future__ import annotations

import shlex

# coreutils `sha256sum` has no SHA-NI code path: ~250 MB/s here, where OpenSSL's `dgst`
# hashes ~1 GB/s. Use OpenSSL when the host has it (same output layout with `-r`: 64 hex
# digits, a separator, the name), else sha256sum. OpenSSL escapes names differently, so names
# with a backslash or a line break always go to sha256sum.
FAST_HASH = (
    "if command -v openssl >/dev/null 2>&1; then H='openssl dgst -sha256 -r'; "
    "else H=sha256sum; fi; "
)


#: the sha256 of each range `K:N` of `$R` (N bytes from byte K, counted from 1) of the file
#: `$F`, one line each. python3 where the host has it: it reads the file itself, while
#: `tail | head | openssl` copies every byte through two pipes, 8 KiB a read — 2.4 s of the
#: host's CPU per GiB against python3's 0.84 s (and `openssl dgst` on a whole file 0.86 s),
#: which on a host that also runs the transfer's sshd was the difference between a verified
#: push and one without (`docs/staging.md`). (`-I -S`: no user site, environment or site.)
_RANGE_SHA256_PY = """import hashlib, os, sys
f = os.open(sys.argv[1], os.O_RDONLY)
for r in sys.argv[2:]:
    at, left = (int(x) for x in r.split(":"))
    at -= 1
    h = hashlib.sha256()
    while left > 0:
        b = os.pread(f, min(left, 1 << 20), at)
        if not b:
            break
        h.update(b)
        at += len(b)
        left -= len(b)
    print(h.hexdigest())
"""
RANGE_SHA256 = (
    f"if command -v python3 >/dev/null 2>&1; then "
    f'python3 -I -S -c {shlex.quote(_RANGE_SHA256_PY)} "$F" $R; else {FAST_HASH}'
    'for r in $R; do tail -c "+${r%:*}" -- "$F" | head -c "${r#*:}" | $H; done; fi'
)
