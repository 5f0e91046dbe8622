"""The sbatch template is valid bash and launches mrl-train under srun with a stable run id."""

import subprocess
from pathlib import Path

SBATCH = Path(__file__).resolve().parents[1] / "slurm" / "train.sbatch"


def test_sbatch_template_parses_and_requeues_into_the_same_run():
    subprocess.run(["bash", "-n", str(SBATCH)], check=True)
    text = SBATCH.read_text()
    assert "#SBATCH --signal=SIGUSR1@90" in text
    assert "#SBATCH --ntasks-per-node=8" in text and "#SBATCH --gpus-per-node=8" in text
    assert "srun .venv/bin/mrl-train" in text
    assert 'run_id="slurm-${SLURM_JOB_ID' in text
