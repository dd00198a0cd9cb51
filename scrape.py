"""Scrape iNaturalist into an ImageFolder + manifest: python scrape.py scrape.taxa='[...]'.
Re-running the same command resumes. See README.md and conf/scrape.yaml."""

from inat_lightning.cli import scrape

if __name__ == "__main__":
    scrape()
