rule fetch_model:
    output:
        "resources/models/{model}",
    log:
        "logs/models/fetch_{model}.log",
    retries: 2
    conda:
        "../envs/facepipe.yaml"
    params:
        key=lambda wildcards: model_key_for_file(wildcards.model),
    script:
        "../scripts/fetch_model.py"


rule make_standin_model:
    output:
        "resources/models/standin/{model}",
    log:
        "logs/models/standin_{model}.log",
    conda:
        "../envs/facepipe.yaml"
    params:
        code=code_version("make_standin_model"),
        key=lambda wildcards: model_key_for_file(wildcards.model),
    script:
        "../scripts/make_standin_model.py"


# `snakemake --cores all fetch_models`: every learned model, so that backend=auto picks the
# learned backend from then on (the command the offline fallback's warning names).
rule fetch_models:
    input:
        fetchable_learned_models(JOBS),


# FP16 swapper made here from the verified FP32 one: no unpinned download is ever used.
rule make_fp16_model:
    input:
        "resources/models/{stem}.onnx",
    output:
        "resources/models/{stem}_fp16.onnx",
    log:
        "logs/models/fp16_{stem}.log",
    conda:
        "../envs/facepipe.yaml"
    params:
        code=code_version("make_fp16_model"),
    script:
        "../scripts/make_fp16_model.py"


# The batched copy of a model (facepipe.models.batching), stand-ins included: made once, and used only
# after a batch through it gave what the original gives one face at a time.
rule make_batched_model:
    input:
        "resources/models/{model_stem}.onnx",
    output:
        "resources/models/{model_stem}_batched.onnx",
    log:
        "logs/models/batched_{model_stem}.log",
    conda:
        "../envs/facepipe.yaml"
    params:
        code=code_version("make_batched_model"),
        precision=lambda wildcards: (
            "fp16" if wildcards.model_stem.endswith("_fp16") else "fp32"
        ),
    script:
        "../scripts/make_batched_model.py"


ruleorder: make_batched_model > make_fp16_model > fetch_model
ruleorder: make_batched_model > make_standin_model
