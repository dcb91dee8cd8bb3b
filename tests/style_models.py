"""The style models that ship in pipeline/style/models, for the tests that check each one."""

SHIPPED_STYLES = (
    "starry_night",
    "the_scream",
    "udnie",
    "starry_night_full",
    "the_scream_full",
    "udnie_full",
)
