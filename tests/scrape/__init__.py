"""Tests of the scrape backends, the downloader and what a server may send."""
