// Status and Result<T> are part of the public API; internal code includes them from here.
#pragma once

#include "kvshare/status.h"
