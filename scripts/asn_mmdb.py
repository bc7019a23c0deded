"""Builds a GeoLite2-ASN-layout .mmdb from @ip-location-db/asn's CSV files.

    python asn_mmdb.py OUT.mmdb asn-ipv4.csv [asn-ipv6.csv ...]

Each CSV row is `first_ip,last_ip,asn,organisation` (CC BY 4.0; see the
package's licence files). Records are `{autonomous_system_number: u32,
autonomous_system_organization: str}`, as in MaxMind's GeoLite2-ASN, in an
IPv6 tree with IPv4 mapped, as MaxMind ships it.
"""

import csv
import sys
import time

from mmdb_writer import MMDBWriter, MmdbU32
from netaddr import IPSet, iprange_to_cidrs


def main(out, *paths):
    start = time.time()
    writer = MMDBWriter(
        ip_version=6,
        ipv4_compatible=True,
        database_type="GeoLite2-ASN",
        languages=["en"],
        description={"en": "ASN ranges from @ip-location-db/asn (CC BY 4.0), GeoLite2-ASN layout"},
    )
    rows = 0
    for path in paths:
        with open(path, newline="", encoding="utf-8") as f:
            for first, last, asn, org in csv.reader(f):
                record = {"autonomous_system_number": MmdbU32(int(asn))}
                if org:
                    record["autonomous_system_organization"] = org
                writer.insert_network(IPSet(iprange_to_cidrs(first, last)), record)
                rows += 1
    writer.to_db_file(out)
    print(f"asn_mmdb: {rows} ranges into {out} in {time.time() - start:.0f} s")


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    main(sys.argv[1], *sys.argv[2:])
