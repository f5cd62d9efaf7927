"""What is inside a model, at a glance: the first thing a user runs on an unfamiliar file.

A KV-cache decoder is also described as one (:mod:`edgeq.graph.decoder`): layers, heads, KV
bytes per token; a decoder whose past and present tensors do not pair up is refused here.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx_ir as ir

from edgeq.graph.decoder import DecoderInfo, describe_decoder
from edgeq.graph.io import load_model
from edgeq.graph.quantizable import find_quantizable, initializer_map
from edgeq.serialization import Serializable


@dataclass
class TensorInfo:
    name: str
    dtype: str
    shape: list[int | str]


@dataclass
class ModelInfo(Serializable):
    schema_type = "edgeq.ModelInfo"
    schema_version = 2  # 2: decoder

    path: str
    file_bytes: int
    ir_version: int
    opsets: dict[str, int]
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    op_histogram: dict[str, int]
    parameters: int
    parameter_bytes_by_dtype: dict[str, int]
    quantizable: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    decoder: DecoderInfo | None = None

    @classmethod
    def _from_data(cls, data: dict[str, Any]) -> ModelInfo:
        info = super()._from_data(data)
        if isinstance(info.decoder, dict):
            info.decoder = DecoderInfo.from_dict(info.decoder, "decoder")
        return info


def _dtype_name(elem_type: int) -> str:
    return onnx.TensorProto.DataType.Name(elem_type).lower() if elem_type else "unknown"


def _value_info(value: onnx.ValueInfoProto) -> TensorInfo:
    tensor_type = value.type.tensor_type
    dims: list[int | str] = []
    if tensor_type.HasField("shape"):
        for dim in tensor_type.shape.dim:
            if dim.HasField("dim_value"):
                dims.append(int(dim.dim_value))
            else:
                dims.append(dim.dim_param or "?")
    return TensorInfo(value.name, _dtype_name(tensor_type.elem_type), dims)


_SUB_BYTE_BITS: dict[int, int] = {
    int(onnx.TensorProto.INT4): 4,
    int(onnx.TensorProto.UINT4): 4,
    **{int(getattr(onnx.TensorProto, n)): 2 for n in ("INT2", "UINT2") if hasattr(onnx.TensorProto, n)},
}


def tensor_nbytes(tensor: onnx.TensorProto) -> int:
    """Bytes the tensor's values occupy (sub-byte types packed, as ONNX stores them)."""
    count = int(np.prod(tensor.dims)) if tensor.dims else 1
    bits = _SUB_BYTE_BITS.get(int(tensor.data_type))
    if bits is not None:
        return (count * bits + 7) // 8
    return count * onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize


def inspect_model(path: str | Path) -> ModelInfo:
    """Summarise a model file: interface, opsets, op mix, parameter bytes, quantizable nodes."""
    path = Path(path)
    model = load_model(path)
    graph = model.graph
    init_names = {t.name for t in graph.initializer}
    params = 0
    by_dtype: Counter[str] = Counter()
    for tensor in initializer_map(graph).values():
        count = int(np.prod(tensor.dims)) if tensor.dims else 1
        params += count
        by_dtype[_dtype_name(tensor.data_type)] += tensor_nbytes(tensor)
    quantizable, skipped = find_quantizable(model, include_embeddings=True)
    model_file = path if path.is_file() else path / "model.onnx"
    file_bytes = model_file.stat().st_size
    decoder = describe_decoder(ir.serde.deserialize_model(model), model_file.parent)
    return ModelInfo(
        path=str(path),
        file_bytes=file_bytes,
        ir_version=int(model.ir_version),
        opsets={(o.domain or "ai.onnx"): int(o.version) for o in model.opset_import},
        inputs=[_value_info(v) for v in graph.input if v.name not in init_names],
        outputs=[_value_info(v) for v in graph.output],
        op_histogram=dict(Counter(n.op_type for n in graph.node).most_common()),
        parameters=params,
        parameter_bytes_by_dtype=dict(by_dtype),
        quantizable=[
            {"name": q.name, "op_type": q.op_type, "weight": q.weight, "shape": list(q.weight_shape)}
            for q in quantizable
        ],
        skipped=[{"name": s.name, "op_type": s.op_type, "reason": s.reason} for s in skipped],
        decoder=decoder,
    )
