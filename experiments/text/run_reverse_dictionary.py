"""Run the WordNet reverse-dictionary benchmark (see `mrl.text.benchmark` and README.md here).

    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
        .venv/bin/python experiments/text/run_reverse_dictionary.py [--help]
"""

from mrl.text.benchmark import main

if __name__ == "__main__":
    main()
