# /etc/profile.d/assume-roled.sh: points AWS tools at assume-roled in login shells of users
# who may use it (members of the token file's group). For everyone else `assume-roled env`
# fails quietly and this does nothing.
if command -v assume-roled >/dev/null 2>&1; then
    _assume_roled_env=$(assume-roled env 2>/dev/null) && eval "$_assume_roled_env"
    unset _assume_roled_env
fi
