"""Scrape iNaturalist into an ImageFolder + manifest: python scrape.py scrape.taxa='[...]'.
Re-running the same command resumes. See README.md and conf/scrape.yaml."""

import hydra
from omegaconf import DictConfig

from inat_lightning.config import run_cli
from inat_lightning.scrape.scraper import scrape


@hydra.main(version_base="1.3", config_path="conf", config_name="scrape")
def main(cfg: DictConfig) -> None:
    run_cli(scrape, cfg)


if __name__ == "__main__":
    main()
