#!/usr/bin/env python3
"""Writes an ONNX face-embedding model of MobileFaceNet's size and shape, with random
weights from a fixed seed, for latency benchmarks only.

    gen-mobilefacenet.py OUT.onnx [--stats OUT.json] [--seed N] [--dim 128]
    gen-mobilefacenet.py --describe MODEL.onnx   (the same counts for an existing model)

The architecture is MobileFaceNet's (Chen et al., 2018, table 1): a strided 3x3 conv,
a depthwise 3x3 conv, fifteen MobileNetV2 bottlenecks (1x1 expand, PReLU, depthwise 3x3
with stride, PReLU, linear 1x1 project, residual where the shape allows), a 1x1 conv to
512, the linear global depthwise 7x7 conv (GDConv) and a linear 1x1 embedding. Batch
normalisation is folded into each conv's bias, as an exported inference model has it.
Input `face` [1,3,112,112] float, output `embedding` [1,DIM].

The weights are random (numpy's legacy RandomState, whose stream numpy keeps stable
across versions), so the embedding it gives means nothing: compare faces with it and
every score is noise. Only its cost is real.

After writing, the parameters, the file size and the multiply-accumulates are counted
from the written graph (shape inference gives every conv's output size), the model is
checked with onnx.checker and, if onnxruntime is importable, run once. The figures go
to stdout and, with --stats, to a JSON file.
"""

import argparse
import hashlib
import json
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

SIDE = 112
OPSET = 17
IR_VERSION = 8  # ONNX Runtime 1.31 reads up to 11; 8 keeps older runtimes able to load it

# MobileFaceNet's bottleneck stages: (expansion t, output channels c, repeats n, stride s).
BOTTLENECKS = [(2, 64, 5, 2), (4, 128, 1, 2), (2, 128, 6, 1), (4, 128, 1, 2), (2, 128, 2, 1)]


class Builder:
    """Collects nodes and initializers; names each tensor after its layer."""

    def __init__(self, rng):
        self.rng = rng
        self.nodes = []
        self.inits = []
        self.n = 0

    def name(self, kind):
        self.n += 1
        return f"{kind}{self.n}"

    def tensor(self, name, array):
        self.inits.append(numpy_helper.from_array(array.astype(np.float32), name))
        return name

    def conv(self, x, cin, cout, k, stride=1, group=1, pad=None, gain=2.0):
        """Conv with the batch norm folded into its bias. `gain` 2 before a PReLU (He),
        smaller for linear layers so activations stay in range through the residuals."""
        name = self.name("conv")
        fan_in = (cin // group) * k * k
        w = self.rng.standard_normal((cout, cin // group, k, k)) * np.sqrt(gain / fan_in)
        b = self.rng.standard_normal(cout) * 0.01
        pad = (k // 2) if pad is None else pad
        out = f"{name}_out"
        self.nodes.append(
            helper.make_node(
                "Conv",
                [x, self.tensor(f"{name}_w", w), self.tensor(f"{name}_b", b)],
                [out],
                name=name,
                kernel_shape=[k, k],
                strides=[stride, stride],
                pads=[pad] * 4,
                group=group,
            )
        )
        return out

    def prelu(self, x, channels):
        name = self.name("prelu")
        slope = np.full((channels, 1, 1), 0.25) + self.rng.standard_normal((channels, 1, 1)) * 0.01
        out = f"{name}_out"
        self.nodes.append(helper.make_node("PRelu", [x, self.tensor(f"{name}_slope", slope)], [out], name=name))
        return out

    def add(self, a, b):
        name = self.name("add")
        out = f"{name}_out"
        self.nodes.append(helper.make_node("Add", [a, b], [out], name=name))
        return out


def build(seed, dim):
    b = Builder(np.random.RandomState(seed))
    x = "face"
    x = b.prelu(b.conv(x, 3, 64, 3, stride=2), 64)  # 56 x 56
    x = b.prelu(b.conv(x, 64, 64, 3, group=64), 64)  # depthwise 3x3
    cin = 64
    for t, c, n, s in BOTTLENECKS:
        for i in range(n):
            stride = s if i == 0 else 1
            hidden = cin * t
            y = b.prelu(b.conv(x, cin, hidden, 1), hidden)
            y = b.prelu(b.conv(y, hidden, hidden, 3, stride=stride, group=hidden), hidden)
            y = b.conv(y, hidden, c, 1, gain=0.5)  # linear projection
            x = b.add(x, y) if stride == 1 and cin == c else y
            cin = c
    x = b.prelu(b.conv(x, cin, 512, 1), 512)  # 7 x 7 x 512
    x = b.conv(x, 512, 512, 7, group=512, pad=0, gain=1.0)  # linear GDConv -> 1 x 1
    x = b.conv(x, 512, dim, 1, gain=1.0)  # linear embedding
    b.nodes.append(helper.make_node("Flatten", [x], ["embedding"], name="flatten", axis=1))
    graph = helper.make_graph(
        b.nodes,
        "mobilefacenet_sized_random",
        [helper.make_tensor_value_info("face", TensorProto.FLOAT, [1, 3, SIDE, SIDE])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [1, dim])],
        b.inits,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="lockerfleet scripts/gen-mobilefacenet.py",
        producer_version=f"seed={seed}",
        doc_string="MobileFaceNet-sized embedding with RANDOM weights: for latency only, its scores mean nothing.",
    )
    model.ir_version = IR_VERSION
    return model


def count(model):
    """Parameters and multiply-accumulates, read from the graph after shape inference."""
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    shapes = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.output) + list(inferred.graph.input):
        shapes[vi.name] = [d.dim_value for d in vi.type.tensor_type.shape.dim]
    inits = {t.name: numpy_helper.to_array(t) for t in inferred.graph.initializer}
    params = sum(int(a.size) for a in inits.values())
    macs = 0
    elementwise = 0  # one FLOP per output element: bias add, PReLU, residual add
    convs = {"Conv": 0, "depthwise": 0}
    for node in inferred.graph.node:
        out = shapes[node.output[0]]
        elements = int(np.prod(out))
        if node.op_type == "Conv":
            w = inits[node.input[1]]
            group = next((a.i for a in node.attribute if a.name == "group"), 1)
            # every output element: (input channels per group) x kh x kw MACs
            macs += elements * int(w.shape[1] * w.shape[2] * w.shape[3])
            elementwise += elements
            convs["depthwise" if group > 1 else "Conv"] += 1
        elif node.op_type in ("PRelu", "Add"):
            elementwise += elements
    return {
        "parameters": params,
        "macs": macs,
        "flops": 2 * macs + elementwise,
        "convs": convs["Conv"],
        "depthwise_convs": convs["depthwise"],
        "nodes": len(inferred.graph.node),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", help="the model to write (with --describe: the model to count)")
    ap.add_argument("--describe", action="store_true", help="count an existing model instead of writing one")
    ap.add_argument("--stats", help="also write the figures to this JSON file")
    ap.add_argument("--seed", type=int, default=20181)
    ap.add_argument("--dim", type=int, default=128, help="embedding size (MobileFaceNet: 128)")
    args = ap.parse_args()
    if args.describe:
        with open(args.out, "rb") as f:
            data = f.read()
        desc = {"file": os.path.abspath(args.out), "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        print(json.dumps({**desc, **count(onnx.load_from_string(data))}))
        return
    if args.dim < 1:
        sys.exit(f"--dim must be positive, not {args.dim}")
    model = build(args.seed, args.dim)
    onnx.checker.check_model(model, full_check=True)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    tmp = args.out + ".tmp"
    with open(tmp, "wb") as f:
        f.write(model.SerializeToString(deterministic=True))
    os.replace(tmp, args.out)
    with open(args.out, "rb") as f:
        data = f.read()
    stats = {
        "file": os.path.abspath(args.out),
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "seed": args.seed,
        "embedding_dim": args.dim,
        "input": "face [1,3,112,112] float32",
        "output": f"embedding [1,{args.dim}] float32",
        "onnx": onnx.__version__,
        "opset": OPSET,
        **count(model),
    }
    try:
        import onnxruntime as ort
    except ImportError:
        stats["onnxruntime_check"] = "skipped (onnxruntime not importable)"
    else:
        s = ort.InferenceSession(args.out, providers=["CPUExecutionProvider"])
        y = s.run(None, {"face": np.zeros((1, 3, SIDE, SIDE), np.float32)})[0]
        if y.shape != (1, args.dim) or not np.all(np.isfinite(y)):
            sys.exit(f"onnxruntime gave {y.shape} (finite: {bool(np.all(np.isfinite(y)))}), [1,{args.dim}] expected")
        stats["onnxruntime_check"] = f"ok, onnxruntime {ort.__version__}: output {list(y.shape)}"
    if args.stats:
        with open(args.stats, "w") as f:
            json.dump(stats, f, indent=2)
            f.write("\n")
    print(
        f"{args.out}: {stats['parameters']:,} parameters, {stats['bytes']:,} bytes, "
        f"{stats['macs'] / 1e6:.1f} M MACs ({stats['flops'] / 1e6:.1f} M FLOPs), "
        f"{stats['convs']} convs + {stats['depthwise_convs']} depthwise; sha256 {stats['sha256']}; "
        f"{stats['onnxruntime_check']}"
    )


if __name__ == "__main__":
    main()
