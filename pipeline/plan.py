"""From the stage registry and a params file to concrete jobs: which instances of each stage the params ask for,
and which file each input of each job is.

Instances: one per setting in use (the base setting "" and any setting a table row uses), one per tokenizer variant
in use ("" always, "_ar" when a table row is an AR baseline, "_<setting>" per setting), one per table1 model, one
per table row (a row with `model_from` reuses another model, so it gets no training job), and one of each single
stage. An input "<stage>.<output>" resolves in the job's context: the same setting / tokenizer variant / model /
row; a row's trained model is its `model_from` owner's (a row's, or a table1 model's `train_var` output).

Both front ends render these jobs (pipeline/render.py): the Snakefile one rule per job, dvc.yaml one stage per job.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from pipeline.params import Params, params_to_dict
from pipeline.registry import BY_NAME, MODEL, ROW, SETTING, SINGLE, STAGES, TOKENIZER, Stage
from pipeline.rows import model_owner, table_rows

STAGE_PACKAGE = "pipeline.stages"


@dataclass(frozen=True)
class Context:
    """Where a job sits: its setting, its tokenizer variant (a suffix), and the model or row it is about."""
    setting: str = ""
    tok: str = ""
    model: str = ""
    row: str = ""

    @property
    def s(self) -> str:
        return f"_{self.setting}" if self.setting else ""


@dataclass(frozen=True)
class Job:
    """One concrete run of a stage: what the front ends schedule."""
    name: str                                   # unique: rule name and DVC stage name
    stage: Stage
    context: Context
    inputs: dict[str, str | tuple[str, ...]]    # CLI flag -> path, or paths for a table's members
    outputs: dict[str, str]                     # CLI flag -> path
    args: dict[str, str | tuple[str, ...]]      # further CLI args
    params: tuple[str, ...]                     # resolved params keys (its fingerprint)
    run: str = "default"                        # params run.name: the root of its outputs and log
    files: tuple[str, ...] = ()                 # files named in params that it reads (weights, reference batch)

    @property
    def module(self) -> str:
        return f"{STAGE_PACKAGE}.{self.stage.module}"

    @property
    def log(self) -> str:
        if self.stage.over in (MODEL, ROW):
            return f"logs/{self.run}/{self.stage.name}/{self.context.model or self.context.row}.log"
        return f"logs/{self.run}/{self.name}.log"

    def input_paths(self) -> list[str]:
        """Every file the job reads: its inputs from other jobs and the files its params name."""
        out = []
        for v in self.inputs.values():
            out += list(v) if isinstance(v, tuple) else [v]
        return list(dict.fromkeys([*out, *self.files]))

    def command(self, overrides: tuple[str, ...] = (), gpus: int = 1) -> str:
        """The shell command; with more than one GPU a multi-GPU stage runs under torchrun. torchrun's parser takes
        any option that abbreviates one of its own (`--log` -> --log-dir, ...) even after the module name, so there
        the log goes by its unambiguous alias `--log-file`."""
        torchrun = gpus > 1 and self.stage.gpus == "many"
        parts = [f"torchrun --standalone --nproc_per_node {gpus} -m" if torchrun else "python -m", self.module,
                 "--params params.yaml", *(f"--configfile {o}" for o in overrides), f"--job {self.name}"]
        for name, v in {**self.inputs, **self.outputs, **self.args}.items():
            vals = v if isinstance(v, tuple) else (v,)
            parts.append(f"--{name.replace('_', '-')} {' '.join(vals)}")
        parts.append(f"{'--log-file' if torchrun else '--log'} {self.log}")
        return " ".join(parts)


@dataclass
class Plan:
    params: Params
    jobs: list[Job] = field(default_factory=list)

    def by_name(self, name: str) -> Job:
        return next(j for j in self.jobs if j.name == name)

    def job_of(self, stage: str, ctx: Context) -> Job | None:
        key = _instance_key(BY_NAME[stage], ctx)
        return next((j for j in self.jobs if j.stage.name == stage and _instance_key(j.stage, j.context) == key),
                    None)


# Conditions of optional inputs and of replacing stages (registry `when` / `replaces`), over the params and a context.
CONDITIONS = {
    "evalnet_scores": lambda p, ctx: p.score.extractor == "evalnet",
    "untrained_baseline": lambda p, ctx: p.table1.untrained_baseline and not p.models[ctx.model].pretrained,
    "validation_row": lambda p, ctx: p.table1.validation_row or bool(ctx.setting),   # Table 2 has its own
    "no_reference_batch": lambda p, ctx: not p.score.reference_batch,
    "import_tokenizer": lambda p, ctx: bool(p.tokenizer.pretrained) and not ctx.tok,   # the base tokenizer
    "import_var": lambda p, ctx: bool(p.models[ctx.model].pretrained),
    "ablation": lambda p, ctx: bool(p.ablation.row),
    "ar_rows": lambda p, ctx: any(r.kind == "ar" for r in p.rows.values()),
    "several_seeds": lambda p, ctx: p.score.seeds > 1,
    # a rejection row keeps a different number of images per seed: its spread is not that of plain sampling
    "row_several_seeds": lambda p, ctx: p.score.seeds > 1 and not p.rows[ctx.row].sampler.rejection.enabled,
    "rejection_evalnet": lambda p, ctx: (p.rows[ctx.row].sampler.rejection.enabled
                                         and not p.rows[ctx.row].sampler.rejection.classifier_weights),
    # the ablation stages serve any row (chosen by params at run time): the classifier of any rejection row
    "rejection_evalnet_rows": lambda p, ctx: any(r.sampler.rejection.enabled
                                                 and not r.sampler.rejection.classifier_weights
                                                 for r in p.rows.values()),
}
# What an input is when its condition fails, if not absent: the standard evaluator's reference batch replaces the
# validation split as the real side of the generated-sample scores.
FALLBACKS = {"no_reference_batch": lambda p: p.score.reference_batch}


def _param_value(p: Params, key: str):
    cur = params_to_dict(p)
    for part in key.split("."):
        cur = cur.get(part) if isinstance(cur, dict) else None
    return cur


def _instance_key(st: Stage, ctx: Context) -> str:
    return {SINGLE: "", SETTING: ctx.s, TOKENIZER: ctx.tok, MODEL: ctx.model, ROW: ctx.row}[st.over]


def _fill(template: str, ctx: Context, name: str) -> str:
    return template.format(n=name, s=ctx.s, t=ctx.tok, model=ctx.model, row=ctx.row)


def row_context(p: Params, row: str) -> Context:
    r = p.rows[row]
    s = f"_{r.setting}" if r.setting else ""
    return Context(setting=r.setting, tok=s + ("_ar" if r.kind == "ar" else ""), row=row)


def _members(p: Params, st: Stage) -> list[Context]:
    if st.table == "table1":
        return [Context(model=m) for m in p.table1_models]
    return [row_context(p, r) for r in getattr(p, st.table).rows]


def resolve_output(p: Params, ref: str, ctx: Context) -> str:
    """The path of output `<stage>.<output>` in context `ctx`."""
    stage, out = ref.split(".")
    if stage == "train_row":                    # a row's model: its own, or its model_from owner's
        kind, owner = model_owner(p, ctx.row)
        if kind == "model":
            return _fill(BY_NAME["train_var"].outputs[out], Context(model=owner), p.run.name)
        ctx = replace(ctx, row=owner)
    return _fill(BY_NAME[stage].outputs[out], ctx, p.run.name)


def _job(p: Params, st: Stage, ctx: Context, name: str) -> Job:
    inputs: dict[str, str | tuple[str, ...]] = {}
    for flag, ref in st.inputs.items():
        cond = st.when.get(flag)
        if cond and not CONDITIONS[cond](p, ctx):
            if cond in FALLBACKS:
                inputs[flag] = FALLBACKS[cond](p)
            continue
        if ref.startswith("*"):
            inputs[flag] = tuple(resolve_output(p, ref[1:], m) for m in _members(p, st))
        else:
            inputs[flag] = resolve_output(p, ref, replace(ctx, **st.input_context.get(flag, {})))
    n = p.run.name
    args: dict[str, str | tuple[str, ...]] = {k: _fill(v, ctx, n) for k, v in st.args.items()}
    if st.table:
        args["models" if st.table == "table1" else "rows"] = tuple(m.model or m.row for m in _members(p, st))
    if st.state:
        args["state_dir"] = _fill(st.state, ctx, n)
    if st.over in (SETTING, TOKENIZER) and ctx.setting:
        args["setting"] = ctx.setting
    if st.over == TOKENIZER and ctx.tok.endswith("_ar"):
        args["scales"] = "last"
    params = tuple(k.format(model=ctx.model, row=ctx.row) for k in st.params)
    if st.over in (SETTING, TOKENIZER) and ctx.setting:
        params += (f"settings.{ctx.setting}",)
    files = []
    for key in st.files:
        v = _param_value(p, key.format(model=ctx.model, row=ctx.row))
        files += [x for x in (v if isinstance(v, (list, tuple)) else [v]) if x]
    outputs = {k: _fill(v, ctx, n) for k, v in st.outputs.items()
               if not (k in st.when and not CONDITIONS[st.when[k]](p, ctx))}     # outputs that exist only sometimes
    return Job(name, st, ctx, inputs, outputs, args, params, n, tuple(dict.fromkeys(files)))


def _instances(p: Params, st: Stage, settings: list[str], tokenizers: list[Context], rows: tuple[str, ...]):
    """(context, job name) of every instance of `st` the params ask for."""
    if st.over == SETTING:
        return [(Context(setting=s, tok=f"_{s}" if s else ""), st.name + (f"_{s}" if s else "")) for s in settings]
    if st.over == TOKENIZER:
        return [(c, st.name + c.tok) for c in tokenizers]
    if st.over == MODEL:
        return [(Context(model=m), f"{st.name}_{m}") for m in p.table1_models]
    if st.over == ROW and st.name == "train_row":      # the rows whose models the table rows sample
        owners = dict.fromkeys(o for kind, o in (model_owner(p, r) for r in rows) if kind == "row")
        return [(row_context(p, r), f"{st.name}_{r}") for r in owners]
    if st.over == ROW:
        return [(row_context(p, r), f"{st.name}_{r}") for r in rows]
    if st.table and st.table != "table1" and not getattr(p, st.table).rows:
        return []
    ctx = Context(setting=st.context.get("setting", ""))
    return [(replace(ctx, tok=ctx.s), st.name)]


def build_plan(p: Params) -> Plan:
    """Every job the params ask for, in registry order (each job's inputs come from earlier jobs). A stage that
    `replaces` another (importing released weights instead of training) takes over the instances where its
    condition holds; a stage with `only_when` has instances only where that condition holds."""
    rows = table_rows(p)
    settings = [""] + sorted({p.rows[r].setting for r in rows if p.rows[r].setting}
                             | ({BY_NAME["table2"].context["setting"]} if p.table2.rows else set()))
    experiment_ar = bool(p.ablation.row) and CONDITIONS["ar_rows"](p, Context())
    ar = [Context(tok="_ar")] if experiment_ar or any(p.rows[r].kind == "ar" for r in rows) else []
    tokenizers = [Context(), *ar, *(Context(setting=s, tok=f"_{s}") for s in settings if s)]
    replaced_by = {st.replaces: st.name for st in STAGES if st.replaces}
    plan = Plan(p)
    for st in STAGES:
        if st.replaces:
            insts = [(c, st.name + n[len(st.replaces):]) for c, n in
                     _instances(p, BY_NAME[st.replaces], settings, tokenizers, rows) if CONDITIONS[st.name](p, c)]
        else:
            insts = _instances(p, st, settings, tokenizers, rows)
            if st.name in replaced_by:
                insts = [(c, n) for c, n in insts if not CONDITIONS[replaced_by[st.name]](p, c)]
        if st.only_when:
            insts = [(c, n) for c, n in insts if CONDITIONS[st.only_when](p, c)]
        plan.jobs += [_job(p, st, ctx, name) for ctx, name in insts]
    return plan
