"""The validity report: gates that check who the user is, what they did and how their tastes moved decide what pays."""
