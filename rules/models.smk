rule fetch_model:
    output:
        "resources/models/{model}",
    params:
        key=lambda wildcards: model_key_for_file(wildcards.model),
    log:
        "logs/models/fetch_{model}.log",
    retries: 2
    conda:
        "../envs/facepipe.yaml"
    script:
        "../scripts/fetch_model.py"


rule make_standin_model:
    output:
        "resources/models/standin/{model}",
    params:
        key=lambda wildcards: model_key_for_file(wildcards.model),
    log:
        "logs/models/standin_{model}.log",
    conda:
        "../envs/facepipe.yaml"
    script:
        "../scripts/make_standin_model.py"
