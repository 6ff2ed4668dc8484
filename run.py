"""Entry point: `python run.py [model=...] [pruner=...] [benchmark=...] [budget=N] [limit=N]`.

Hydra composes configs/config.yaml; `python run.py --cfg job` prints the composed config.
"""

import sys

import hydra
from omegaconf import DictConfig


@hydra.main(config_path="configs", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from evoprune.harness.models import ModelUnavailableError
    from evoprune.harness.runner import DataUnavailableError, evaluate
    from evoprune.harness.settings import ConfigError

    try:
        code = evaluate(cfg)
    except (ConfigError, ModelUnavailableError, DataUnavailableError) as err:
        print(f"error: {err}", file=sys.stderr)
        code = 2
    sys.exit(code)


if __name__ == "__main__":
    main()
