"""Taxonomy: lineages from the genuine API, taxa.csv, rank-level metrics checked by hand, the
look-alike table's common rank, and the degraded path without a taxonomy."""

import json
from pathlib import Path

import numpy as np
import pytest

from inat_lightning.analysis.report import write_report
from inat_lightning.analysis.tables import most_confused_pairs, per_class_table, weakest_first
from inat_lightning.data.datamodule import ImageFolderDataModule
from inat_lightning.data.synthetic import SyntheticSpecies
from inat_lightning.data.taxonomy import (
    TAXA_NAME,
    TaxonEntry,
    Taxonomy,
    entry_from_api,
    load_lineages,
    read_taxa,
    write_taxa,
)
from inat_lightning.models.classifier import Classifier
from inat_lightning.models.confusion import Confusion, rank_scalars

FIXTURES = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "inat" / "v1"
needs_fixtures = pytest.mark.skipif(not FIXTURES.is_dir(), reason="../shared/fixtures absent")

# two congeners (Aus), one more genus of the same family (Bus, family Idae), one unrelated
LINEAGES = {
    "Aus alpha": {"order": "O1", "family": "Idae", "genus": "Aus"},
    "Aus beta": {"order": "O1", "family": "Idae", "genus": "Aus"},
    "Bus gamma": {"order": "O1", "family": "Idae", "genus": "Bus"},
    "Cus delta": {"order": "O2", "family": "Odae", "genus": "Cus"},
}
NAMES = list(LINEAGES)
CM = np.array(
    [
        [5, 3, 1, 1],  # Aus alpha: 3 taken for its congener, 1 same family, 1 unrelated
        [2, 6, 0, 2],
        [0, 1, 7, 2],
        [1, 0, 0, 9],
    ]
)
SPARSE = Confusion.from_dense(CM)  # the same counts, as the classifier keeps them


@needs_fixtures
def test_lineage_from_the_genuine_taxa_endpoint():
    (taxon,) = json.loads((FIXTURES / "get_taxa_by_id.json").read_text())["results"]
    entry = entry_from_api(taxon)
    assert entry.taxon_id == str(taxon["id"]) and entry.name == taxon["name"]
    assert entry.lineage["genus"] == "Nicrophorus" and entry.lineage["family"] == "Staphylinidae"
    assert entry.lineage["order"] == "Coleoptera" and entry.lineage["kingdom"] == "Animalia"
    assert "subfamily" not in entry.lineage  # only the recorded ranks
    assert entry.ancestor_ids[:2] == ("48460", "1") and str(taxon["id"]) not in entry.ancestor_ids


@needs_fixtures
def test_an_observations_taxon_gives_ids_without_names():
    obs = json.loads((FIXTURES / "get_observations_page1.json").read_text())["results"][0]
    entry = entry_from_api(obs["taxon"])
    assert entry.ancestor_ids[-1] == "48663" and entry.lineage == {}  # names need /v1/taxa/<id>


def test_taxa_csv_round_trip_and_merge(tmp_path):
    path = tmp_path / TAXA_NAME
    write_taxa(path, [TaxonEntry("1", "Aus alpha", "species", ("9", "8"), LINEAGES["Aus alpha"])])
    write_taxa(path, [TaxonEntry("2", "Cus delta", "species", (), LINEAGES["Cus delta"])])
    taxa = read_taxa(path)
    assert set(taxa) == {"1", "2"}
    assert taxa["1"].ancestor_ids == ("9", "8") and taxa["1"].lineage == LINEAGES["Aus alpha"]
    assert load_lineages(tmp_path, ["Cus delta", "Zus"]) == {"Cus delta": LINEAGES["Cus delta"]}
    assert load_lineages(tmp_path / "nowhere", NAMES) is None


def test_rank_accuracy_and_within_genus_share_by_hand():
    tax = Taxonomy(NAMES, LINEAGES)
    total = CM.sum()  # 40, 27 on the diagonal
    # genus: the diagonal (27) plus Aus alpha <-> Aus beta (3 + 2)
    assert SPARSE.share_within(tax.group_ids("genus")) == pytest.approx((27 + 5) / total)
    # family Idae holds the first three: add Aus -> Bus (1) and Bus -> Aus beta (1)
    assert SPARSE.share_within(tax.group_ids("family")) == pytest.approx((27 + 5 + 2) / total)
    # 13 mistakes, 5 of them between congeners
    assert SPARSE.share_within(tax.group_ids("genus"), mistakes_only=True) == pytest.approx(5 / 13)
    assert rank_scalars(SPARSE, tax) == pytest.approx(
        {"acc_genus": 32 / 40, "acc_family": 34 / 40, "within_genus_share": 5 / 13}
    )
    assert [NAMES[i] for i in tax.order()] == NAMES  # already in lineage order
    assert tax.groups(tax.order()) == [(0, 2, "Aus"), (2, 3, "Bus"), (3, 4, "Cus")]


def test_confused_pairs_name_their_lowest_common_rank():
    pairs = most_confused_pairs(SPARSE, NAMES, top=20, taxonomy=Taxonomy(NAMES, LINEAGES))
    rank = {(p["true"], p["predicted"]): p["common_rank"] for p in pairs}
    assert rank[("Aus alpha", "Aus beta")] == "genus"
    assert rank[("Aus alpha", "Bus gamma")] == "family"
    assert rank[("Bus gamma", "Cus delta")] == "—"  # nothing shared
    assert "common_rank" not in most_confused_pairs(SPARSE, NAMES)[0]  # no taxonomy: no column


def test_a_class_without_lineage_shares_nothing():
    partial = {k: v for k, v in LINEAGES.items() if k != "Aus beta"}
    tax = Taxonomy(NAMES, partial)
    # alpha <-> beta no longer
    assert SPARSE.share_within(tax.group_ids("genus")) == pytest.approx(27 / 40)
    assert tax.common_rank(0, 1) == ""


def test_per_class_table_sorts_the_weakest_rarest_first():
    table = weakest_first(per_class_table(SPARSE, NAMES, train_counts=[50, 5, 40, 60]))
    assert [r["class"] for r in table][0] == "Aus alpha"  # lowest F1
    assert {r["class"]: r["train_images"] for r in table}["Aus beta"] == 5


def test_classifier_logs_rank_metrics_only_with_a_taxonomy():
    with_tax = Classifier(4, class_names=NAMES, depth=18, lineages=LINEAGES)
    assert with_tax.taxonomy is not None and with_tax.hparams.lineages == LINEAGES
    without = Classifier(4, class_names=NAMES, depth=18)
    assert without.taxonomy is None
    # the lineages travel in the checkpoint's hyper-parameters as plain values
    assert json.loads(json.dumps(dict(with_tax.hparams)))["lineages"] == LINEAGES


def test_synthetic_set_has_a_taxonomy_and_a_folder_tree_has_none(tmp_path):
    root = tmp_path / "syn"
    dm = ImageFolderDataModule(
        root,
        image_size=32,
        num_workers=0,
        synthetic=SyntheticSpecies(num_species=4, observations_per_species=6, image_size=32),
    )
    dm.setup()
    assert dm.lineages["Piscis striatus"]["genus"] == "Piscis"
    assert dm.lineages["Piscis punctatus"]["family"] == dm.lineages["Piscis striatus"]["family"]
    (root / TAXA_NAME).unlink()
    (root / "synthetic.json").unlink()  # now a plain user folder without taxa.csv
    plain = ImageFolderDataModule(root, image_size=32, num_workers=0)
    plain.setup()
    assert plain.lineages is None


def test_report_degrades_to_species_level_with_a_note(tmp_path):
    summary = {
        "checkpoint": "x.ckpt",
        "class_names": NAMES,
        "chance_accuracy": 0.25,
        "metrics": {"test/acc": 27 / 40},
        "confused_pairs": [],
        "per_class": per_class_table(SPARSE, NAMES),
        "audit": {"title": "audit", "legend": "", "rows": []},
        "gradcam": [],
    }
    text = write_report(tmp_path, {**summary, "taxonomy": None}).read_text()
    assert "## Taxonomy" in text and "species level only" in text
    found = {"classes_with_lineage": 4, "metrics": rank_scalars(SPARSE, Taxonomy(NAMES, LINEAGES))}
    text = write_report(tmp_path, {**summary, "taxonomy": found}).read_text()
    assert "| genus | 0.800 |" in text and "| family | 0.850 |" in text
    assert "38% of the mistakes stay within the genus" in text
