"""Deployment: ONNX export (float32; int8 of the matrix multiplications and, calibrated, of the CNN's
convolutions), Hugging Face ``transformers`` folders; ``python -m s3prl_plugins.bin.export`` is the command,
``s3prl.hub.onnx_local`` runs the result.

Imports nothing heavy: onnx, onnxruntime and transformers are imported where they are used."""
