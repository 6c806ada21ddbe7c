"""Token vocabulary (DESIGN.md section 2). Fixed: checkpoints record it and refuse a mismatch."""

PAD = 0
UNK = 1  # missing genotype call
SOS = 2
EOS = 3
MASK = 4
ALLELE_0 = 5  # REF
ALLELE_1 = 6  # ALT
VOCAB_SIZE = 7

VOCAB: dict[str, int] = {
    "PAD": PAD,
    "UNK": UNK,
    "SOS": SOS,
    "EOS": EOS,
    "MASK": MASK,
    "0": ALLELE_0,
    "1": ALLELE_1,
}

MAX_SITES = 1028  # sites per window; framed length is MAX_SITES + 2
