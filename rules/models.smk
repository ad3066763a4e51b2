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
        key=lambda wildcards: model_key_for_file(wildcards.model),
    script:
        "../scripts/make_standin_model.py"


# `snakemake --cores all fetch_models`: every learned model, so that backend=auto picks the
# learned backend from then on (the command the offline fallback's warning names).
rule fetch_models:
    input:
        fetchable_learned_models(),


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
    script:
        "../scripts/make_fp16_model.py"


ruleorder: make_fp16_model > fetch_model
