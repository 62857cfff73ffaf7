"""Rule-file models (``.rule``) and fixed-width text input (``.fwf``) for squall, registered through entry points."""
