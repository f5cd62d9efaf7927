"""onnxruntime's own weight-only quantizers, called the same way by every benchmark.

``MatMulNBitsQuantizer`` with the DEFAULT, RTN, HQQ, k_quant or GPTQ algorithm config, or
``MatMulBnb4Quantizer`` for nf4: the peer rows of ``weight_only.py`` and ``decoder.py``. Their
printed chatter is silenced; a failure raises, and the caller makes it a row of the table.
"""

from __future__ import annotations

import contextlib
import io
from typing import Any

import onnx

ALGORITHMS = ("DEFAULT", "RTN", "HQQ", "k_quant", "GPTQ", "NF4")


def quantize_with_onnxruntime(
    model: onnx.ModelProto, algorithm: str, bits: int, block: int, symmetric: bool,
    calibration_reader: Any = None,
) -> onnx.ModelProto:
    """``model`` quantized by onnxruntime's ``algorithm`` (GPTQ needs ``calibration_reader``)."""
    from onnxruntime.quantization import matmul_nbits_quantizer as mnq

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        if algorithm == "NF4":
            from onnxruntime.quantization.matmul_bnb4_quantizer import MatMulBnb4Quantizer

            bnb = MatMulBnb4Quantizer(model, quant_type=1, block_size=block)
            bnb.process()
            return bnb.model.model  # type: ignore[no-any-return]
        if algorithm == "RTN":
            config: Any = mnq.RTNWeightOnlyQuantConfig()
        elif algorithm == "HQQ":
            config = mnq.HQQWeightOnlyQuantConfig(block_size=block, bits=bits)
        elif algorithm == "k_quant":
            config = mnq.KQuantWeightOnlyQuantConfig()
        elif algorithm == "GPTQ":
            config = mnq.GPTQWeightOnlyQuantConfig(calibration_data_reader=calibration_reader, block_size=block, actorder=True)
        elif algorithm == "DEFAULT":
            config = mnq.DefaultWeightOnlyQuantConfig(block_size=block, is_symmetric=symmetric, bits=bits)
        else:
            raise ValueError(f"unknown onnxruntime algorithm {algorithm!r}; expected one of {', '.join(ALGORITHMS)}")
        quantizer = mnq.MatMulNBitsQuantizer(model, bits=bits, block_size=block, is_symmetric=symmetric, algo_config=config)
        quantizer.process()
        return quantizer.model.model  # type: ignore[no-any-return]
