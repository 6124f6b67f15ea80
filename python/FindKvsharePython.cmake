# Decides whether the Python module is built (KVSHARE_PYTHON_FOUND). Included from the top-level
# CMakeLists.txt before any library is defined, because the module needs the libraries compiled as
# position-independent code.
set(KVSHARE_PYTHON_FOUND OFF)
if(KVSHARE_BUILD_PYTHON)
  # Debian's python3 is the one python3-pybind11 and python3-pytest install into (scripts/install.sh); a
  # python3 earlier on PATH (pyenv, conda) usually has neither. -DPython3_EXECUTABLE=... picks another one
  # (setup.py passes the interpreter that runs pip).
  if(NOT Python3_EXECUTABLE AND EXISTS /usr/bin/python3)
    set(Python3_EXECUTABLE /usr/bin/python3)
  endif()
  find_package(Python3 3.8 COMPONENTS Interpreter Development.Module)
  if(Python3_FOUND)
    find_package(pybind11 2.6 CONFIG QUIET)
  endif()
  if(NOT Python3_FOUND)
    message(STATUS "kvshare: the Python module is skipped: no Python 3 with its C headers was found "
                   "(apt-get install python3-dev, or run scripts/install.sh)")
  elseif(NOT pybind11_FOUND)
    message(STATUS "kvshare: the Python module is skipped: pybind11 was not found "
                   "(apt-get install pybind11-dev, or run scripts/install.sh)")
  endif()
  if(NOT Python3_FOUND OR NOT pybind11_FOUND)
    if(KVSHARE_REQUIRE_PYTHON)  # set by setup.py: pip install must fail rather than build nothing
      message(FATAL_ERROR "kvshare: the Python module cannot be built (see above)")
    endif()
  else()
    set(KVSHARE_PYTHON_FOUND ON)
    message(STATUS "kvshare: building the Python module for ${Python3_EXECUTABLE} (pybind11 ${pybind11_VERSION})")
    set(CMAKE_POSITION_INDEPENDENT_CODE ON)
    # Position-independent code still calls and inlines the engine's own functions directly, as an
    # executable's code does (they are never interposed).
    add_compile_options(-fno-semantic-interposition)
  endif()
else()
  message(STATUS "kvshare: the Python module is off (KVSHARE_BUILD_PYTHON=OFF)")
endif()
