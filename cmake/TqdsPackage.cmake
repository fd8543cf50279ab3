# The installed C++ package: `cmake --install <build> --prefix P` puts the
# public headers (include/tq, include/ds, include/tqds), the static libraries
# the clients link and a CMake package config under P/lib/cmake/tqds, all in
# install component "dev" (the programs are component "runtime"; the Python
# wheel installs only component "python", so none of this lands in it).
#
# An outside project:
#   find_package(tqds 0.2 CONFIG REQUIRED)      # CMAKE_PREFIX_PATH=P
#   target_link_libraries(app PRIVATE tqds::client)
#
# Targets (namespace tqds::; the same names exist as aliases in this build):
#   tqds::client  both clients below: what most applications link
#   tqds::tq      TransferQueue (include/tq): TransferQueueClient, and the
#                 controller and storage unit to embed; with the datasystem
#                 built it includes the YuanrongStorageManager backend and
#                 links tqds::ds
#   tqds::ds      the datasystem client (include/ds/kv_client.h: ds::KVClient)
#   tqds::common  Status/Result and Buffer (include/tqds)
#   tqds::ds_proto, tqds::deps   internal, pulled in by the targets above
# The package finds its dependencies itself: Threads, spdlog, nlohmann_json
# (its headers are in the public API) and libzmq through pkg-config.
include(CMakePackageConfigHelpers)

add_library(tqds_client INTERFACE)
target_link_libraries(tqds_client INTERFACE tq_core)
if(TARGET ds_client)
  target_link_libraries(tqds_client INTERFACE ds_client)
endif()
set_target_properties(tqds_client PROPERTIES EXPORT_NAME client)

# Aliases: a project that adds this one with add_subdirectory() links the
# same names as one that uses the installed package.
add_library(tqds::client ALIAS tqds_client)
add_library(tqds::tq ALIAS tq_core)
add_library(tqds::common ALIAS tqds_common)
if(TARGET ds_client)
  add_library(tqds::ds ALIAS ds_client)
endif()

if(NOT TQDS_INSTALL_DEV)
  return()
endif()

set(TQDS_CMAKE_INSTALL_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/tqds)
set(_tqds_export_targets tqds_deps tqds_common tq_core tqds_client)
if(TARGET ds_client)
  list(APPEND _tqds_export_targets ds_proto ds_client)
endif()

install(DIRECTORY ${PROJECT_SOURCE_DIR}/include/
        DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}
        COMPONENT dev
        FILES_MATCHING PATTERN "*.h")
install(TARGETS ${_tqds_export_targets}
        EXPORT tqdsTargets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT dev
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT dev)
install(EXPORT tqdsTargets
        NAMESPACE tqds::
        DESTINATION ${TQDS_CMAKE_INSTALL_DIR}
        COMPONENT dev)

configure_package_config_file(
  ${CMAKE_CURRENT_LIST_DIR}/tqdsConfig.cmake.in
  ${PROJECT_BINARY_DIR}/cmake/tqdsConfig.cmake
  INSTALL_DESTINATION ${TQDS_CMAKE_INSTALL_DIR})
# 0.x: a minor version may change the API, so only the same minor matches.
write_basic_package_version_file(
  ${PROJECT_BINARY_DIR}/cmake/tqdsConfigVersion.cmake
  VERSION ${PROJECT_VERSION}
  COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/cmake/tqdsConfig.cmake
              ${PROJECT_BINARY_DIR}/cmake/tqdsConfigVersion.cmake
        DESTINATION ${TQDS_CMAKE_INSTALL_DIR}
        COMPONENT dev)
