/* Linked with one part's whole library and only the parts it may use (CMakeLists.txt): the
 * link fails when the part calls anything of a part tests/layers.txt does not allow. */
int main(void)
{
    return 0;
}
