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
