intent={
 'unconstrained':'any text about a restaurant',
 'sentence':'a sentence about a restaurant (`--form sentence`)',
 'template':'a sentence of the form `NAME is a pub/restaurant/coffee shop ... near LANDMARK.`',
 'template-short':'a sentence of the form `Name is a pub/restaurant near Landmark.` with one-word names',
 'infill-eagle':'`The Eagle is a ___ near ___.` with the holes filled: a kind of venue and what it is near',
 'infill-bakers':'`___ is a family friendly ___ near The Bakers.` with the holes filled: a name and a kind of venue',
 'length':'any text about a restaurant, 8 to 12 tokens',
}
