"""Entry point: `python run.py [model=...] [pruner=...] [benchmark=...] [budget=N] [limit=N]`.

Hydra composes configs/config.yaml; `python run.py --cfg job` prints the composed config.
Sweeps: `python run.py -m +experiment=table1` (or any Hydra multirun, e.g. `-m budget=16,32,64`)
runs every job in this process with the basic launcher; the exit status is the worst job's.
Exit status: 0 ok, 1 some sample failed, 2 bad config / missing weights or data / run folder in use by
another run (before any work), 3 a run stopped part-way (its scoring failed; its answers are kept, a rerun
re-scores them), 130 interrupted (Ctrl-C; a rerun resumes).
"""

import sys

import hydra
from omegaconf import DictConfig

from evoprune.harness.common.overrides import check_command_line
from evoprune.harness.evaluation import sweep  # noqa: F401 - registers the config resolver experiments use

exit_status = 0


@hydra.main(config_path="configs", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> int:
    global exit_status
    from evoprune.harness.common.errors import ConfigError, DataUnavailableError, ModelUnavailableError
    from evoprune.harness.common.run_lock import RunFolderBusy
    from evoprune.harness.evaluation.settings import check_config
    from evoprune.harness.evaluation.sweep import apply_cell
    from evoprune.harness.models.weights import locate_weights

    try:
        cfg = apply_cell(cfg)
        # a bad value or missing weights end here, before the model code and lmms-eval are imported (~3 s)
        check_config(cfg)
        locate_weights(cfg.model)
        from evoprune.harness.evaluation import runner

        try:
            code = runner.evaluate(cfg)
        except runner.RunStopped as err:
            print(f"error: {err}", file=sys.stderr)
            code = 3
    except (ConfigError, ModelUnavailableError, DataUnavailableError, RunFolderBusy) as err:
        print(f"error: {err}", file=sys.stderr)
        code = 2
    exit_status = max(exit_status, code)
    return code


if __name__ == "__main__":
    problem = check_command_line(sys.argv[1:])
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        sys.exit(2)
    try:
        main()
    except KeyboardInterrupt as interrupt:
        print(f"\n{interrupt or 'interrupted; rerun the same command to resume'}", file=sys.stderr)
        sys.exit(130)
    sys.exit(exit_status)
