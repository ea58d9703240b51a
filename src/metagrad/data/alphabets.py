"""The 50 Omniglot alphabets and the official character ids they hold (1..1623)."""

from __future__ import annotations

# (official alphabet folder name, first id, last id), in official id order.
ALPHABETS: tuple[tuple[str, int, int], ...] = tuple(
    (name, int(a), int(b))
    for name, a, b in (
        line.split()
        for line in """
    Arcadian 1 26; Armenian 27 67; Asomtavruli_(Georgian) 68 107; Balinese 108 131;
    Bengali 132 177; Blackfoot_(Canadian_Aboriginal_Syllabics) 178 191; Braille 192 217;
    Cyrillic 218 250; Early_Aramaic 251 272; Syriac_(Estrangelo) 273 295;
    Anglo-Saxon_Futhorc 296 324; Futurama 325 350; Grantha 351 393; Greek 394 417;
    Gujarati 418 465; Hebrew 466 487; Japanese_(hiragana) 488 539;
    Inuktitut_(Canadian_Aboriginal_Syllabics) 540 555; Malay_(Jawi_-_Arabic) 556 595;
    Japanese_(katakana) 596 642; Korean 643 682; Latin 683 708; Alphabet_of_the_Magi 709 728;
    Mkhedruli_(Georgian) 729 769; Burmese_(Myanmar) 770 803; N_Ko 804 836;
    Ojibwe_(Canadian_Aboriginal_Syllabics) 837 850; Sanskrit 851 892; Tagalog 893 909;
    Tifinagh 910 964; Angelic 965 984; Atemayar_Qelisayer 985 1010; Atlantean 1011 1036;
    Aurek-Besh 1037 1062; Avesta 1063 1088; Ge_ez 1089 1114; Glagolitic 1115 1159;
    Gurmukhi 1160 1204; Kannada 1205 1245; Keble 1246 1271; Malayalam 1272 1318;
    Manipuri 1319 1358; Mongolian 1359 1388; Old_Church_Slavonic_(Cyrillic) 1389 1433;
    Oriya 1434 1479; Syriac_(Serto) 1480 1502; Sylheti 1503 1530; Tengwar 1531 1555;
    Tibetan 1556 1597; ULOG 1598 1623""".replace("\n", " ").split(";")
    )
)


def alphabet_of(char_id: int) -> str:
    """Official alphabet folder name of an official character id (1..1623)."""
    for name, first, last in ALPHABETS:
        if first <= char_id <= last:
            return name
    raise ValueError(f"Omniglot character ids run from 1 to 1623, got {char_id}")
