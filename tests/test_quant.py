"""Quantizers and packing, against numpy and the gguf package's own dequantizer."""

import numpy as np
import pytest
from gguf import GGMLQuantizationType, quants

from lutlm import _C
from lutlm.formats.safetensors_dir import unpack_bitnet
from lutlm.model.linear import WEIGHT_FORMATS, fuse_gguf_linear
from lutlm.quant import (
    FORMATS,
    Int4Weight,
    Int8Weight,
    TernaryWeight,
    format_of,
    gguf_import,
    gguf_tq_arrays,
    int4_from_gguf_blocks,
    int8_from_gguf_blocks,
    quantize_int4,
    quantize_int8,
    quantize_ternary,
    ternarize,
)
from lutlm.quant._common import GROUP_SIZES, unpack_group_scales
from lutlm.quant.int4 import LAYOUTS

RAGGED = [(1, 1), (16, 32), (17, 33), (31, 100), (48, 257), (5, 1000)]


@pytest.mark.parametrize("per_row", [False, True])
def test_ternarize_is_absmean(rng, per_row):
    w = rng.standard_normal((37, 300)).astype(np.float32) * 0.02
    t, scale = ternarize(w, per_row)
    gamma = np.abs(w).mean(axis=1) if per_row else np.full(37, np.abs(w).mean())
    np.testing.assert_allclose(scale, gamma, rtol=1e-6)
    want = np.clip(np.round(w / gamma[:, None]), -1, 1)
    np.testing.assert_array_equal(t, want)
    assert set(np.unique(t)) <= {-1, 0, 1}
    np.testing.assert_allclose(quantize_ternary(w, per_row).dequantize(), t * scale[:, None])


@pytest.mark.parametrize("n,k", RAGGED)
def test_ternary_pack_round_trip(rng, n, k):
    t = rng.integers(-1, 2, size=(n, k)).astype(np.int8)
    w = TernaryWeight.pack(t, 1.0)
    np.testing.assert_array_equal(w.values(), t)
    # 2 bits per weight plus padding to 16 rows and 32 columns.
    assert w.codes.nbytes == -(-n // 16) * 16 * (-(-k // 32) * 32) // 4


@pytest.mark.parametrize("n,k", RAGGED)
@pytest.mark.parametrize("group_size", [32, 64, 128])
def test_int4_pack_round_trip(rng, n, k, group_size):
    q = rng.integers(0, 16, size=(n, k)).astype(np.uint8)
    g = -(-k // group_size)
    d = rng.uniform(-1, 1, size=(n, g)).astype(np.float16)
    m = rng.uniform(-1, 1, size=(n, g)).astype(np.float16)
    w = Int4Weight.pack(q, d, m, group_size)
    np.testing.assert_array_equal(_C.unpack_int4(w.codes, n, k, group_size), q)
    dd = np.repeat(d.astype(np.float32), group_size, axis=1)[:, :k]
    mm = np.repeat(m.astype(np.float32), group_size, axis=1)[:, :k]
    np.testing.assert_array_equal(w.dequantize(), dd * q + mm)


@pytest.mark.parametrize("group_size", [32, 64, 128])
@pytest.mark.parametrize("symmetric", [True, False])
def test_int4_quantization_error(rng, group_size, symmetric):
    w = rng.standard_normal((20, 300)).astype(np.float32)
    qw = quantize_int4(w, group_size, symmetric)
    err = np.abs(qw.dequantize() - w)
    d = np.repeat(np.abs(qw._unpack_scales(qw.d)), group_size, axis=1)[:, :300]
    # Round to nearest: half a step, except the symmetric format's -8..7 range clips
    # the group's extreme value by up to one step; fp16 scales add a little.
    limit = (1.0 if symmetric else 0.5) * d * (1 + 2e-3) + 2e-3 * np.abs(w)
    assert (err <= limit + 1e-6).all()


@pytest.mark.parametrize("kind", ["Q4_0", "Q4_1"])
def test_gguf_q4_import_is_bit_exact(rng, kind):
    qtype = GGMLQuantizationType[kind]
    w = (rng.standard_normal((40, 256)) * rng.uniform(0.01, 3, size=(40, 1))).astype(np.float32)
    blocks = quants.quantize(w, qtype)
    want = quants.dequantize(blocks, qtype)
    got = int4_from_gguf_blocks(blocks, (40, 256), kind)
    np.testing.assert_array_equal(got.dequantize(), want)
    # And the kernels compute with exactly those values.
    x = rng.standard_normal((3, 256)).astype(np.float32)
    ref = x.astype(np.float64) @ want.astype(np.float64).T
    for method in ("lut", "mad"):
        y = got.matmul(x, method)
        assert np.abs(y - ref).max() < 0.03 * np.abs(ref).max()


def test_gguf_import_errors():
    with pytest.raises(ValueError, match="needs 36 bytes, got 35"):
        int4_from_gguf_blocks(np.zeros(35, np.uint8), (2, 32), "Q4_0")
    with pytest.raises(ValueError, match="multiple of 32"):
        int4_from_gguf_blocks(np.zeros(18, np.uint8), (1, 31), "Q4_0")
    with pytest.raises(ValueError, match="Q4_0 or Q4_1"):
        int4_from_gguf_blocks(np.zeros(18, np.uint8), (1, 32), "Q5_0")


@pytest.mark.parametrize("n,k", RAGGED)
@pytest.mark.parametrize("group_size", [32, 64, 128])
def test_int8_pack_round_trip(rng, n, k, group_size):
    q = rng.integers(-128, 128, size=(n, k)).astype(np.int8)
    d = rng.uniform(-1, 1, size=(n, -(-k // group_size))).astype(np.float16)
    w = Int8Weight.pack(q, d, group_size)
    np.testing.assert_array_equal(w.values(), q)
    dd = np.repeat(d.astype(np.float32), group_size, axis=1)[:, :k]
    np.testing.assert_array_equal(w.dequantize(), dd * q)
    # 8 bits per weight plus padding to 16 rows and whole groups (and 32 columns).
    kp = -(-k // max(32, group_size)) * max(32, group_size)
    assert w.codes.shape == (-(-n // 16), kp // 4, 16, 4)
    assert w.nbytes == -(-n // 16) * 16 * (kp + 2 * kp // group_size)


@pytest.mark.parametrize("group_size", [32, 64, 128])
def test_int8_quantization_is_q8_0(rng, group_size):
    k = 300
    w = (rng.standard_normal((20, k)) * rng.uniform(0.01, 3, size=(20, 1))).astype(np.float32)
    w[3, :group_size] = 0.0  # an all-zero group: d = 0, q = 0
    qw = quantize_int8(w, group_size)
    g = -(-k // group_size)
    padded = np.zeros((20, g * group_size), np.float32)
    padded[:, :k] = w
    amax = np.abs(padded.reshape(20, g, group_size)).max(axis=2)
    d = (amax / 127).astype(np.float16)
    np.testing.assert_array_equal(unpack_group_scales(qw.d, 20), d.astype(np.float32))
    d32 = np.repeat(d.astype(np.float32), group_size, axis=1)[:, :k]
    want = np.clip(np.rint(np.divide(w, d32, out=np.zeros_like(w), where=d32 != 0)), -127, 127)
    np.testing.assert_array_equal(qw.values(), want)
    # Round to nearest for the stored scale: half a step (+ the clip at 127 of a group's
    # extreme, at most fp16's relative rounding of d).
    err = np.abs(qw.dequantize() - w)
    assert (err <= 0.5 * d32 * (1 + 1e-6) + 1e-3 * np.abs(w)).all()
    assert err[3, :group_size].max() == 0.0


def test_gguf_q8_0_import_is_bit_exact(rng):
    w = (rng.standard_normal((40, 256)) * rng.uniform(0.01, 3, size=(40, 1))).astype(np.float32)
    blocks = quants.quantize(w, GGMLQuantizationType.Q8_0)
    want = quants.dequantize(blocks, GGMLQuantizationType.Q8_0)
    got = int8_from_gguf_blocks(blocks, (40, 256))
    np.testing.assert_array_equal(got.dequantize(), want)
    # Codes -128 (legal in Q8_0, never produced by its quantizer) import exactly too.
    raw = blocks.copy().reshape(40, 8, 34)
    raw[:, :, 2:] = rng.integers(-128, 128, size=(40, 8, 32)).astype(np.int8).view(np.uint8)
    raw[:, :, 2] = 0x80
    raw = raw.reshape(40, -1)
    want = quants.dequantize(raw, GGMLQuantizationType.Q8_0)
    np.testing.assert_array_equal(int8_from_gguf_blocks(raw, (40, 256)).dequantize(), want)
    # And the kernels compute with exactly those values.
    x = rng.standard_normal((3, 256)).astype(np.float32)
    ref = x.astype(np.float64) @ want.astype(np.float64).T
    y = int8_from_gguf_blocks(raw, (40, 256)).matmul(x, act_bits=16)
    assert np.abs(y - ref).max() < 1e-4 * np.abs(ref).max()


def test_fused_q8_0_parts_import_exactly(rng):
    """q, k, v stored as Q8_0 become one Int8Weight whatever the chosen format."""
    parts, want = [], []
    for n in (64, 32, 32):
        w = rng.standard_normal((n, 96)).astype(np.float32)
        blocks = quants.quantize(w, GGMLQuantizationType.Q8_0)
        parts.append(("Q8_0", (n, 96), blocks))
        want.append(quants.dequantize(blocks, GGMLQuantizationType.Q8_0))
    for fmt in ("int4", "int8", "f32"):
        fused = fuse_gguf_linear(parts, [], fmt)
        assert isinstance(fused, Int8Weight)
        np.testing.assert_array_equal(fused.dequantize(), np.concatenate(want))


def test_int8_errors():
    with pytest.raises(ValueError, match="needs 68 bytes, got 67"):
        int8_from_gguf_blocks(np.zeros(67, np.uint8), (2, 32))
    with pytest.raises(ValueError, match="multiple of 32"):
        int8_from_gguf_blocks(np.zeros(34, np.uint8), (1, 31))
    with pytest.raises(ValueError, match="-128..127"):
        Int8Weight.pack(np.full((3, 32), 128, np.int16), np.ones((3, 1)), 32)
    with pytest.raises(ValueError, match="must be integer"):
        Int8Weight.pack(np.zeros((3, 32), np.float32), np.ones((3, 1)), 32)
    with pytest.raises(ValueError, match=r"d must have shape \(3, 2\)"):
        Int8Weight.pack(np.zeros((3, 64), np.int8), np.ones((3, 1)), 32)
    with pytest.raises(ValueError, match="group_size"):
        quantize_int8(np.zeros((2, 32), np.float32), group_size=16)
    with pytest.raises(ValueError, match="fp16 scale range"):
        quantize_int8(np.full((2, 32), 1e10, np.float32))
    with pytest.raises(ValueError, match="act_bits must be 8 or 16"):
        quantize_int8(np.ones((2, 32), np.float32)).matmul(np.ones(32), act_bits=4)


@pytest.mark.parametrize("kind", ["TQ1_0", "TQ2_0"])
def test_gguf_tq_with_one_scale_per_row_imports_as_ternary(rng, kind):
    """BitNet conversions (one scale per tensor; q, k, v each their own) stay ternary,
    equal to gguf's dequantizer bit for bit, whatever the chosen format."""
    qtype = GGMLQuantizationType[kind]
    parts, want = [], []
    for n, scale in ((64, 0.02), (32, 0.7), (32, 3.0)):
        w = rng.integers(-1, 2, size=(n, 512)).astype(np.float32) * np.float32(scale)
        blocks = quants.quantize(w, qtype)
        parts.append((kind, (n, 512), blocks))
        want.append(quants.dequantize(blocks, qtype))
    want = np.concatenate(want)
    for fmt in WEIGHT_FORMATS:
        fused = fuse_gguf_linear(parts, [], fmt)
        assert isinstance(fused, TernaryWeight)
        np.testing.assert_array_equal(fused.dequantize(), want)
    # And the kernels compute with exactly those values (error bounds: test_gemm.py).
    x = rng.standard_normal((3, 512)).astype(np.float32)
    ref = x.astype(np.float64) @ want.astype(np.float64).T
    for method in ("lut", "mad"):
        y = fused.matmul(x, method)
        assert np.abs(y - ref).max() < 0.03 * np.abs(ref).max()


@pytest.mark.parametrize("kind", ["TQ1_0", "TQ2_0"])
def test_gguf_tq_with_scales_per_block_imports_as_int4_exactly(rng, kind):
    """llama.cpp's quantizer gives every block of 256 its own scale, which no per-row
    scale can hold: those tensors become symmetric INT4 (group 128), still exact. So do
    arbitrary bytes (TQ1_0 bytes past 242, TQ2_0's code 3 = weight 2d)."""
    qtype = GGMLQuantizationType[kind]
    w = rng.standard_normal((40, 512)).astype(np.float32)
    blocks = quants.quantize(w, qtype)
    got = fuse_gguf_linear([(kind, (40, 512), blocks)], [], "ternary")
    assert isinstance(got, Int4Weight) and got.group_size == 128
    np.testing.assert_array_equal(got.dequantize(), quants.dequantize(blocks, qtype))
    raw = rng.integers(0, 256, size=blocks.shape, dtype=np.uint8).reshape(40, 2, -1)
    raw[..., -2:] = np.full((40, 2, 1), 0.25, np.float16).view(np.uint8)  # one d per row
    raw = raw.reshape(40, -1)
    got = fuse_gguf_linear([(kind, (40, 512), raw)], [], "int4")
    codes = gguf_tq_arrays(raw, (40, 512), kind)[0]
    # TQ1_0 digits are always 0..2, so one d per row keeps it ternary; TQ2_0's 3 cannot.
    assert isinstance(got, TernaryWeight if kind == "TQ1_0" else Int4Weight)
    assert codes.max() == (2 if kind == "TQ1_0" else 3)
    np.testing.assert_array_equal(got.dequantize(), quants.dequantize(raw, qtype))


def test_tq_gguf_model_loads_ternary(tmp_path, rng):
    """A tiny BitNet GGUF (q/k/v TQ1_0, the rest TQ2_0, one scale per tensor): every
    layer loads as ternary with gguf's values, with weights="int4" asked for."""
    import gguf

    from lutlm.model import load_model

    D, F, T = 256, 512, GGMLQuantizationType
    w = gguf.GGUFWriter(str(tmp_path / "tiny.gguf"), "bitnet")
    w.add_embedding_length(D)
    w.add_block_count(1)
    w.add_feed_forward_length(F)
    w.add_head_count(4)
    w.add_vocab_size(64)
    want = {}

    def ternary(name: str, n: int, k: int, kind: str) -> None:
        t = rng.integers(-1, 2, size=(n, k)).astype(np.float32) * rng.uniform(0.01, 1)
        blocks = quants.quantize(t, T[kind])
        want[name] = quants.dequantize(blocks, T[kind])
        w.add_tensor(name, blocks, raw_dtype=T[kind])

    w.add_tensor("token_embd.weight", rng.standard_normal((64, D)).astype(np.float32))
    w.add_tensor("output_norm.weight", np.ones(D, np.float32))
    for name, n, k, kind in (
        ("attn_q", D, D, "TQ1_0"),
        ("attn_k", D, D, "TQ1_0"),
        ("attn_v", D, D, "TQ1_0"),
        ("attn_output", D, D, "TQ2_0"),
        ("ffn_gate", F, D, "TQ2_0"),
        ("ffn_up", F, D, "TQ2_0"),
        ("ffn_down", D, F, "TQ2_0"),
    ):
        ternary(f"blk.0.{name}.weight", n, k, kind)
    for name, n in (("attn_norm", D), ("ffn_norm", D), ("attn_sub_norm", D), ("ffn_sub_norm", F)):
        w.add_tensor(f"blk.0.{name}.weight", np.ones(n, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    layer = load_model(tmp_path / "tiny.gguf", weights="int4", head="f32").layers[0]
    b = "blk.0.{}.weight".format
    for lin, names in (
        (layer.qkv, ("attn_q", "attn_k", "attn_v")),
        (layer.o, ("attn_output",)),
        (layer.gate_up, ("ffn_gate", "ffn_up")),
        (layer.down, ("ffn_down",)),
    ):
        assert isinstance(lin.weight, TernaryWeight)
        want_w = np.concatenate([want[b(n)] for n in names])
        np.testing.assert_array_equal(lin.weight.dequantize(), want_w)


def test_gguf_tq_errors():
    with pytest.raises(ValueError, match="needs 132 bytes, got 131"):
        gguf_tq_arrays(np.zeros(131, np.uint8), (2, 256), "TQ2_0")
    with pytest.raises(ValueError, match="multiple of 256"):
        gguf_tq_arrays(np.zeros(54, np.uint8), (1, 255), "TQ1_0")
    with pytest.raises(ValueError, match="TQ1_0 or TQ2_0"):
        gguf_tq_arrays(np.zeros(66, np.uint8), (1, 256), "Q2_K")


def test_unpack_bitnet_is_transformers_layout():
    """The example in transformers' unpack_weights docstring (integrations/bitnet.py):
    bits 2i..2i+1 of packed row r are row i * N/4 + r; codes are w + 1."""
    packed = np.array([[0b10100001, 0b00011000], [0b10010000, 0b00001010]], np.uint8)
    want = [[0, -1], [-1, 1], [-1, 1], [-1, 1], [1, 0], [0, -1], [1, -1], [1, -1]]
    np.testing.assert_array_equal(unpack_bitnet(packed).astype(np.int8) - 1, want)


# ---------------------------------------------------------------- the table of formats


def format_samples(name: str, w: np.ndarray) -> list:
    """Weights of one row of FORMATS: its model quantizer, and for INT4/INT8 every group
    size (INT4: both layouts, with and without minimums)."""
    samples = [FORMATS[name].quantize(w)]
    if name == "int4":
        samples += [
            quantize_int4(w, g, symmetric=sym, layout=layout)
            for g in GROUP_SIZES
            for layout in LAYOUTS
            for sym in (True, False)
        ]
    if name == "int8":
        samples += [quantize_int8(w, g) for g in GROUP_SIZES]
    return samples


@pytest.mark.parametrize("name", list(FORMATS))
@pytest.mark.parametrize("n,k", RAGGED)
def test_format_row_declares_what_its_packer_produces(rng, name, n, k):
    """Each row's declared arrays (dtype and shape from N, K and the group size) are what
    its packer produced, the packed file's round trip gives the same weight back, the
    uniform kernel call multiplies like the weight's dequantized values, and the GPU
    repack's codes and scales give those values too."""
    row = FORMATS[name]
    w = rng.standard_normal((n, k)).astype(np.float32)
    x = rng.standard_normal((3, k)).astype(np.float32)
    for p in format_samples(name, w):
        assert format_of(p) is row
        fields, arrays = row.stored(p)
        specs = row.arrays(n, k, fields.get("group_size", 32))
        assert set(specs) - set(arrays) <= row.optional_arrays <= set(specs)
        for key, a in arrays.items():
            assert (a.dtype, a.shape) == (np.dtype(specs[key][0]), specs[key][1]), key
        back = row.from_stored(arrays, (n, k), fields)
        assert format_of(back) is row
        deq = p if name == "f32" else p.dequantize()
        np.testing.assert_array_equal(deq, back if name == "f32" else back.dequantize())
        ref = x @ deq.T
        err = np.abs(row.kernel(p, 16)(x) - ref).max() / np.abs(ref).max()
        assert err < (3e-2 if name == "ternary" else 2e-3), err  # ternary: int8 activations
        if row.gpu_codes is None:
            continue
        codes, d, m, group = row.gpu_codes(p)
        assert codes.dtype == np.uint8 and codes.shape == (n, k)
        zero = {"int4": 8, "int8": 128, "ternary": 1}[name]
        scale = np.repeat(d.reshape(n, -1), group or k, axis=1)[:, :k]
        offset = -zero * scale if m is None else np.repeat(m, group, axis=1)[:, :k]
        np.testing.assert_allclose(scale * codes + offset, deq, rtol=1e-6, atol=1e-6)


def test_format_of_and_gguf_import_are_table_lookups():
    assert {f.name for f in FORMATS.values()} == set(WEIGHT_FORMATS)
    assert gguf_import(["Q4_0", "Q4_1"]) is FORMATS["int4"]
    assert gguf_import(["Q8_0"]) is FORMATS["int8"]
    assert gguf_import(["TQ2_0", "TQ1_0"]) is FORMATS["ternary"]
    assert gguf_import(["Q4_0", "Q8_0"]) is None  # mixed: dequantized, the load's format
    assert gguf_import(["F16"]) is None and gguf_import([]) is None
    # Each GGUF type is imported by one row at most.
    types = [t for f in FORMATS.values() for t in f.gguf_types]
    assert len(types) == len(set(types))
    with pytest.raises(TypeError, match="not a packed weight"):
        format_of(object())
